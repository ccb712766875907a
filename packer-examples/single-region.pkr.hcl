# Single region: one customer-managed key, AMI shared with one consumer account, amikey verifies
# the snapshot key and publishes the AMI id and key ARN to SSM.
#
#   packer init single-region.pkr.hcl
#   packer build -var kms_key_arn=arn:aws:kms:us-east-1:111111111111:key/... single-region.pkr.hcl

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

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "kms_key_arn" {
  type        = string
  description = "Customer-managed key in var.region; its key policy must allow the consumer account."
  default     = "arn:aws:kms:us-east-1:111111111111:key/1234abcd-12ab-34cd-56ef-1234567890ab"
}

variable "consumer_accounts" {
  type    = list(string)
  default = ["222222222222"]
}

locals {
  name = "base-al2023"
}

source "amazon-ebs" "base" {
  region        = var.region
  instance_type = "t3.micro"
  ssh_username  = "ec2-user"
  ami_name      = "${local.name}-${formatdate("YYYYMMDDhhmm", timestamp())}"

  source_ami_filter {
    filters = {
      name                = "al2023-ami-2023.*-x86_64"
      virtualization-type = "hvm"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  encrypt_boot = true
  kms_key_id   = var.kms_key_arn

  ami_users      = var.consumer_accounts
  snapshot_users = var.consumer_accounts
}

build {
  sources = ["source.amazon-ebs.base"]

  post-processor "amikey" {
    kms_key_id     = var.kms_key_arn
    ami_users      = var.consumer_accounts
    snapshot_users = var.consumer_accounts
    ssm_path       = "/images/${local.name}"
  }
}
