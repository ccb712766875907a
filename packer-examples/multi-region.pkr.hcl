# Three regions, one customer-managed key per region. The build region's key is `kms_key_id`;
# the copies' keys are `region_kms_key_ids` (without it the copies would be encrypted with
# aws/ebs and sharing would fail at the end of the build: packer-plugin-amazon #270).
# amikey gets the same map, from the same local, and checks every regional snapshot.

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

variable "build_region" {
  type    = string
  default = "us-east-1"
}

variable "copy_regions" {
  type    = list(string)
  default = ["eu-west-1", "ap-southeast-2"]
}

variable "key_account" {
  type    = string
  default = "111111111111"
}

variable "consumer_accounts" {
  type    = list(string)
  default = ["222222222222", "333333333333"]
}

locals {
  # One alias per region, created by the key stack in every region.
  key_arns = {
    for r in concat([var.build_region], var.copy_regions) :
    r => "arn:aws:kms:${r}:${var.key_account}:alias/ami-${r}"
  }
  copy_keys = { for r in var.copy_regions : r => local.key_arns[r] }
}

source "amazon-ebs" "app" {
  region        = var.build_region
  instance_type = "t3.micro"
  ssh_username  = "ec2-user"
  ami_name      = "app-${formatdate("YYYYMMDDhhmm", timestamp())}"

  source_ami_filter {
    filters = {
      name                = "al2023-ami-2023.*-x86_64"
      virtualization-type = "hvm"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  encrypt_boot       = true
  kms_key_id         = local.key_arns[var.build_region]
  ami_regions        = var.copy_regions
  region_kms_key_ids = local.copy_keys

  ami_users      = var.consumer_accounts
  snapshot_users = var.consumer_accounts
}

build {
  sources = ["source.amazon-ebs.app"]

  post-processors {
    post-processor "amikey" {
      kms_key_id         = local.key_arns[var.build_region]
      region_kms_key_ids = local.copy_keys
      ami_users          = var.consumer_accounts
      snapshot_users     = var.consumer_accounts
      ssm_path           = "/images/app"
    }
    post-processor "manifest" {
      output     = "manifest.json"
      strip_path = true
    }
  }
}
