//! Applies one [`Write`] or one grant write ([`create_grant`], [`retire_grant`]): exactly one AWS
//! write call, nothing else. Idempotence comes from the
//! plan (only differing items are written); retries and throttling from the SDK's retry mode.

use aws_sdk_ec2::types::{
    CreateVolumePermission, CreateVolumePermissionModifications, LaunchPermission,
    LaunchPermissionModifications, PermissionGroup, SnapshotAttributeName,
};
use aws_sdk_kms::types::GrantOperation;
use aws_sdk_ssm::types::{ParameterType, Tag};

use super::clients::Aws;
use super::error::AwsError;
use crate::core::plan::{MANAGED_TAG, Principals, Write};

fn launch_permissions(p: &Principals) -> Vec<LaunchPermission> {
    let mut v = Vec::new();
    v.extend(p.users.iter().map(|u| LaunchPermission::builder().user_id(u).build()));
    v.extend(p.groups.iter().map(|_| LaunchPermission::builder().group(PermissionGroup::All).build()));
    v.extend(p.org_arns.iter().map(|o| LaunchPermission::builder().organization_arn(o).build()));
    v.extend(p.ou_arns.iter().map(|o| LaunchPermission::builder().organizational_unit_arn(o).build()));
    v
}

fn volume_permissions(users: &[String]) -> Vec<CreateVolumePermission> {
    users
        .iter()
        .map(|u| {
            if u == "all" {
                CreateVolumePermission::builder().group(PermissionGroup::All).build()
            } else {
                CreateVolumePermission::builder().user_id(u).build()
            }
        })
        .collect()
}

/// Makes the one call of `write` in `region` with `aws`'s identity.
pub async fn apply(aws: &Aws, region: &str, write: &Write) -> Result<(), AwsError> {
    match write {
        Write::ModifyLaunchPermission { ami_id, add, remove } => {
            let mods = LaunchPermissionModifications::builder()
                .set_add((!add.is_empty()).then(|| launch_permissions(add)))
                .set_remove((!remove.is_empty()).then(|| launch_permissions(remove)))
                .build();
            aws.ec2(region)
                .modify_image_attribute()
                .image_id(ami_id)
                .launch_permission(mods)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ModifyImageAttribute", region, e))?;
        }
        Write::ModifyCreateVolumePermission { snapshot_id, add, remove } => {
            let mods = CreateVolumePermissionModifications::builder()
                .set_add((!add.is_empty()).then(|| volume_permissions(add)))
                .set_remove((!remove.is_empty()).then(|| volume_permissions(remove)))
                .build();
            aws.ec2(region)
                .modify_snapshot_attribute()
                .snapshot_id(snapshot_id)
                .attribute(SnapshotAttributeName::CreateVolumePermission)
                .create_volume_permission(mods)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ModifySnapshotAttribute", region, e))?;
        }
        Write::EnableImageDeprecation { ami_id, deprecate_at } => {
            enable_deprecation(aws, region, ami_id, deprecate_at).await?;
        }
        Write::EnableImageDeregistrationProtection { ami_id, with_cooldown } => {
            enable_protection(aws, region, ami_id, *with_cooldown).await?;
        }
        Write::DeregisterImage { ami_id, delete_snapshots } => {
            deregister_image(aws, region, ami_id, *delete_snapshots).await?;
        }
        Write::PutParameter { name, value, param_type, data_type, overwrite } => {
            let mut req = aws
                .ssm(region)
                .put_parameter()
                .name(name)
                .value(value)
                .r#type(ParameterType::from(param_type.as_str()))
                .data_type(data_type)
                .description("Managed by amikey: do not edit by hand");
            // AWS refuses Overwrite together with Tags: tag on create only.
            req = if *overwrite {
                req.overwrite(true)
            } else {
                req.tags(
                    Tag::builder()
                        .key(MANAGED_TAG.0)
                        .value(MANAGED_TAG.1)
                        .build()
                        .map_err(|e| AwsError::local("PutParameter", region, e.to_string()))?,
                )
            };
            req.send().await.map_err(|e| {
                let mut err = AwsError::from_sdk("PutParameter", region, e);
                if *overwrite && err.hint.is_none() && err.code.as_deref() == Some("ValidationException") {
                    // SSM cannot change an existing parameter's type or data type in place.
                    err.hint = Some(format!(
                        "If {name} exists with another type or data type, SSM cannot convert it: delete it \
                         (aws ssm delete-parameter --name {name} --region {region}) and re-run"
                    ));
                }
                err
            })?;
        }
    }
    Ok(())
}

/// CreateGrant with a deterministic `Name` (a retry returns the same grant) and the caller's
/// account as retiring principal (so `--retire-stale` can retire it later). Returns the id.
pub async fn create_grant(
    aws: &Aws,
    region: &str,
    key_arn: &str,
    grantee_arn: &str,
    operations: &[String],
    name: &str,
    retiring_account: &str,
) -> Result<String, AwsError> {
    let ops: Vec<GrantOperation> = operations.iter().map(|o| GrantOperation::from(o.as_str())).collect();
    let out = aws
        .kms(region)
        .create_grant()
        .key_id(key_arn)
        .grantee_principal(grantee_arn)
        .set_operations(Some(ops))
        .name(name)
        .retiring_principal(format!("arn:aws:iam::{retiring_account}:root"))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("CreateGrant", region, e))?;
    Ok(out.grant_id().unwrap_or_default().to_string())
}

/// RetireGrant `grant_id` on `key_arn`.
pub async fn retire_grant(aws: &Aws, region: &str, key_arn: &str, grant_id: &str) -> Result<(), AwsError> {
    aws.kms(region)
        .retire_grant()
        .key_id(key_arn)
        .grant_id(grant_id)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("RetireGrant", region, e))?;
    Ok(())
}

/// EnableImageDeprecation at `at` (RFC 3339).
pub async fn enable_deprecation(aws: &Aws, region: &str, ami: &str, at: &str) -> Result<(), AwsError> {
    let when = aws_smithy_types::DateTime::from_str(at, aws_smithy_types::date_time::Format::DateTime)
        .map_err(|e| AwsError::local("EnableImageDeprecation", region, format!("{at:?}: {e}")))?;
    aws.ec2(region)
        .enable_image_deprecation()
        .image_id(ami)
        .deprecate_at(when)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("EnableImageDeprecation", region, e))?;
    Ok(())
}

/// EnableImageDeregistrationProtection.
pub async fn enable_protection(
    aws: &Aws,
    region: &str,
    ami: &str,
    with_cooldown: bool,
) -> Result<(), AwsError> {
    aws.ec2(region)
        .enable_image_deregistration_protection()
        .image_id(ami)
        .with_cooldown(with_cooldown)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("EnableImageDeregistrationProtection", region, e))?;
    Ok(())
}

/// DeregisterImage (with `DeleteAssociatedSnapshots`): per snapshot, AWS's return code
/// (`success`; `skipped` when another AMI still uses it, …).
pub async fn deregister_image(
    aws: &Aws,
    region: &str,
    ami: &str,
    delete_snapshots: bool,
) -> Result<Vec<(String, String)>, AwsError> {
    let out = aws
        .ec2(region)
        .deregister_image()
        .image_id(ami)
        .delete_associated_snapshots(delete_snapshots)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DeregisterImage", region, e))?;
    Ok(out
        .delete_snapshot_results()
        .iter()
        .map(|r| {
            (
                r.snapshot_id().unwrap_or_default().to_string(),
                r.return_code().map(|c| c.as_str().to_string()).unwrap_or_else(|| "unknown".into()),
            )
        })
        .collect())
}
