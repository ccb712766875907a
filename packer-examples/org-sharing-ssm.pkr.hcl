# Share with a whole AWS Organization and publish, in every region, the parameters consumers
# read: <ssm_path>/image_id (DataType aws:ec2:image), <ssm_path>/kms_key_arn and
# <ssm_path>/snapshot_ids. Consumers in the organization cannot be listed up front, so
# snapshot_users is not used: they launch (and copy) through the launch permission and learn
# which key to grant themselves from kms_key_arn. See consumer/README.md.

packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
    amikey = {
      source  = "github.com/amikey/amikey"
      version = ">= 0.1.0"
    }
  }
}

variable "org_arn" {
  type    = string
  default = "arn:aws:organizations::111111111111:organization/o-exampleorgid"
}

variable "keys" {
  type = map(string)
  default = {
    "us-east-1" = "arn:aws:kms:us-east-1:111111111111:key/mrk-1234abcd12ab34cd56ef1234567890ab"
    "eu-west-1" = "arn:aws:kms:eu-west-1:111111111111:key/mrk-1234abcd12ab34cd56ef1234567890ab"
  }
}

locals {
  region      = "us-east-1"
  copy_keys   = { for r, k in var.keys : r => k if r != local.region }
  copy_region = [for r, k in var.keys : r if r != local.region]
}

source "amazon-ebs" "golden" {
  region        = local.region
  instance_type = "t3.micro"
  ssh_username  = "ec2-user"
  ami_name      = "golden-${formatdate("YYYYMMDDhhmm", timestamp())}"

  source_ami_filter {
    filters = {
      name                = "al2023-ami-2023.*-x86_64"
      virtualization-type = "hvm"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  encrypt_boot       = true
  kms_key_id         = var.keys[local.region]
  ami_regions        = local.copy_region
  region_kms_key_ids = local.copy_keys
  ami_org_arns       = [var.org_arn]
}

build {
  sources = ["source.amazon-ebs.golden"]

  post-processor "amikey" {
    kms_key_id         = var.keys[local.region]
    region_kms_key_ids = local.copy_keys
    ami_org_arns       = [var.org_arn]
    ssm_path           = "/images/${source.name}"
    on_violation       = "fail"
  }
}
