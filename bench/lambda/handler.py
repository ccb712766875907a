"""The baseline bench/lambda.py measures our function against: what teams deploy today, a Python
Lambda in the style of binxio's Custom::KMSGrant provider (boto3 under awslambdaric, the Python
runtime's client), in the few lines such a provider needs to make the same grants for a Parameter
Store Change: read the published key, one CreateGrant (named, so a retry returns the same grant)
per grantee. No retiring of the replaced key's grants, no checks: less work than ours does.
"""

import os

import boto3

# Clients at import time, as such handlers do (this is part of their init).
ssm = boto3.client("ssm")
kms = boto3.client("kms")
OPERATIONS = ["Decrypt", "Encrypt", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom", "ReEncryptTo",
              "CreateGrant", "DescribeKey", "GenerateDataKey"]


def handler(event, context):
    key = ssm.get_parameter(Name=os.environ["AMIKEY_SSM_PATH"] + "/kms_key_arn")["Parameter"]["Value"]
    account = event["account"]
    grantees = [f"arn:aws:iam::{account}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"]
    grantees += [r for r in os.environ.get("AMIKEY_GRANTEE_ROLES", "").split(",") if r]
    ids = [kms.create_grant(KeyId=key, GranteePrincipal=g, Operations=OPERATIONS,
                            Name="kmsgrant-" + g.rsplit("/", 1)[-1])["GrantId"] for g in grantees]
    return {"grants": ids}
