# The same build as ../amazon-ebs.pkr.hcl, written for Packer 1.7 and later (tested with 1.9.4):
# the only change is the `packer` block declaring amikey in `required_plugins`, so `packer init`
# installs it (or, with a matching install already in place, does nothing). Packer 1.6.x does not
# know `required_plugins`: it runs ../amazon-ebs.pkr.hcl with the binary installed under its
# legacy name (see the README's Install section).

packer {
  required_plugins {
    amikey = {
      source  = "github.com/amikey/amikey"
      version = ">= 0.1.0"
    }
  }
}

variable "endpoint" {
  type    = string
  default = "http://127.0.0.1:5000"
}

variable "kms_us_east_1" {
  type    = string
  default = "alias/amikey-demo"
}

variable "kms_us_west_2" {
  type    = string
  default = "alias/amikey-demo"
}

variable "kms_eu_west_1" {
  type    = string
  default = "alias/amikey-demo"
}

variable "consumer_account" {
  type    = string
  default = "111122223333"
}

source "amazon-ebs" "base" {
  access_key              = "testing"
  secret_key              = "testing"
  region                  = "us-east-1"
  custom_endpoint_ec2     = var.endpoint
  skip_region_validation  = true
  skip_metadata_api_check = true

  source_ami    = "ami-04681a1dbd79675a5"
  instance_type = "t3.micro"
  communicator  = "none"
  ami_name      = "amikey-demo-base"

  encrypt_boot = true
  kms_key_id   = var.kms_us_east_1
  ami_regions  = ["us-west-2", "eu-west-1"]
  region_kms_key_ids = {
    "us-west-2" = var.kms_us_west_2
    "eu-west-1" = var.kms_eu_west_1
  }
  ami_users      = [var.consumer_account]
  snapshot_users = [var.consumer_account]
}

build {
  sources = ["source.amazon-ebs.base"]

  post-processor "amikey" {
    endpoint_url = var.endpoint
    access_key   = "testing"
    secret_key   = "testing"
    region       = "us-east-1"

    kms_key_id = var.kms_us_east_1
    region_kms_key_ids = {
      "us-west-2" = var.kms_us_west_2
      "eu-west-1" = var.kms_eu_west_1
    }
    ami_users      = [var.consumer_account]
    snapshot_users = [var.consumer_account]
    ssm_path       = "/amikey-demo/base"

    # Also write the parameters in the consumer account, through this role there.
    publish_accounts  = [var.consumer_account]
    publish_role_name = "amikey-publisher"
  }

  # Record the (passed-through) AMI ids for the CLI steps of scripts/demo.
  post-processor "manifest" {
    output = "packer-manifest.json"
  }
}
