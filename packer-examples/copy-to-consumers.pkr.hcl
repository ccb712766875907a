# Every consumer account owns a verified copy of the AMI in each region, encrypted with its own
# customer managed key (alias/golden in each consumer account and region), published in that
# account under /images/golden: image_id (the consumer's copy), kms_key_arn (the consumer's key),
# snapshot_ids and source_image_id. The copy_to accounts are added to the sharing (launch
# permission and createVolumePermission) automatically: a copy needs both. The producer key
# policies must let the consumers use the keys for the copy (`amikey policy generate
# --consumer-account ACCOUNT --key KEY_ARN --merge`); amikey checks this before copying.
# A failed copy never deletes the producer's AMIs (on_copy_failure = "warn", the default).

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

variable "keys" {
  type = map(string)
  default = {
    "us-east-1" = "arn:aws:kms:us-east-1:111111111111:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    "eu-west-1" = "arn:aws:kms:eu-west-1:111111111111:key/abcd1234-ab12-cd34-ef56-abcdef123456"
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
}

build {
  sources = ["source.amazon-ebs.golden"]

  post-processor "amikey" {
    kms_key_id         = var.keys[local.region]
    region_kms_key_ids = local.copy_keys
    ssm_path           = "/images/golden"
    copy_timeout       = "90m"

    copy_to {
      account    = "222222222222"
      role_name  = "amikey-copy"
      kms_key_id = "alias/golden"
    }

    copy_to {
      account   = "333333333333"
      role_name = "amikey-copy"
      region_kms_key_ids = {
        "us-east-1" = "alias/golden-use1"
        "eu-west-1" = "alias/golden-euw1"
      }
      ssm_path = "/images/golden-local"
    }
  }
}
