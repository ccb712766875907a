"""Deploys deploy/amikey-grants.json into moto's CloudFormation (tests/it/lambda.rs).

  cfn_stack.py create ENDPOINT TEMPLATE ZIP PARAMS_JSON   -> prints {"stack_id", "resources", "custom"}
  cfn_stack.py wait ENDPOINT STACK_ID STATUS              -> waits (30 s) for the stack status, prints the stack

moto creates the role, log group, function, rules and permissions; it starts the custom resource by
invoking the function in Docker, which this machine does not have, so the stack waits for the
custom resource's answer: the test sends the same Create request to the real function under the
Runtime Interface Emulator, which answers moto's ResponseURL.
"""
import json
import sys
import time

import boto3

# moto answers the custom-resource ResponseURL from the region of the (absent) signature, us-east-1
REGION = "us-east-1"


def client(endpoint, service):
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def create(endpoint, template, zip_path, params):
    params = json.loads(params)
    s3 = client(endpoint, "s3")
    bucket = params["CodeBucket"] + (f"-{REGION}" if params.get("CodeBucketRegionSuffix", "true") == "true" else "")
    s3.create_bucket(Bucket=bucket)
    with open(zip_path, "rb") as f:
        s3.put_object(Bucket=bucket, Key=params["CodeKey"], Body=f.read())
    cfn = client(endpoint, "cloudformation")
    with open(template) as f:
        body = f.read()
    stack_id = cfn.create_stack(
        StackName="amikey-grants", TemplateBody=body, Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
    )["StackId"]
    resources = {r["LogicalResourceId"]: {"type": r["ResourceType"], "status": r["ResourceStatus"],
                                          "physical": r.get("PhysicalResourceId")}
                 for r in cfn.describe_stack_resources(StackName=stack_id)["StackResources"]}
    fn = client(endpoint, "lambda").get_function(FunctionName="amikey-grants")["Configuration"]
    rules = client(endpoint, "events").list_rules()["Rules"]
    role = client(endpoint, "iam").get_role_policy(
        RoleName=fn["Role"].split("/")[-1], PolicyName="amikey-consumer")["PolicyDocument"]
    print(json.dumps({
        "stack_id": stack_id,
        "status": cfn.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"],
        "resources": resources,
        "function": {k: fn.get(k) for k in ["Runtime", "Handler", "Timeout", "MemorySize", "Architectures", "Environment"]},
        "rules": [{"name": r["Name"], "pattern": json.loads(r["EventPattern"]) if r.get("EventPattern") else None,
                   "schedule": r.get("ScheduleExpression")} for r in rules],
        "role_policy": role,
    }, default=str))


def wait(endpoint, stack_id, want):
    cfn = client(endpoint, "cloudformation")
    deadline = time.monotonic() + 30
    while True:
        stack = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
        if stack["StackStatus"] == want or time.monotonic() > deadline:
            print(json.dumps(stack, default=str))
            return
        time.sleep(0.2)


if __name__ == "__main__":
    {"create": create, "wait": wait}[sys.argv[1]](*sys.argv[2:])
