# The same build as amazon-ebs.pkr.hcl with a classic mistake: the copy to eu-west-1 is
# encrypted with the AWS managed key aws/ebs. amikey fails the build, naming region, AMI,
# snapshot, the key found and the key expected, and shares and publishes nothing.

variable "endpoint" {
  type    = string
  default = "http://127.0.0.1:5000"
}

variable "kms_us_east_1" {
  type = string
}

variable "kms_us_west_2" {
  type = string
}

variable "kms_eu_west_1" {
  type = string
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
  ami_name      = "amikey-demo-broken"

  encrypt_boot = true
  kms_key_id   = var.kms_us_east_1
  ami_regions  = ["us-west-2", "eu-west-1"]
  region_kms_key_ids = {
    "us-west-2" = var.kms_us_west_2
    "eu-west-1" = "" # the mistake: the copy to eu-west-1 gets the AWS managed aws/ebs key
  }
  # No ami_users here: Packer itself refuses to share aws/ebs snapshots, so the mistake slips
  # through the build and only amikey catches it.
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
    ssm_path       = "/amikey-demo/broken"
  }
}
