//! The AWS edge of the AMI lifecycle: the reads `retire` and `rollback` need that no other command
//! makes (parameter history, image references, DescribeImages by filter). One call per function;
//! the lifecycle writes are in [`super::apply`] with the others; decisions are in
//! [`crate::core::lifecycle`].

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ImageReferenceResourceType, ResourceTypeRequest};

use super::clients::Aws;
use super::error::AwsError;
use super::read::image_facts;
use crate::core::facts::ImageFacts;
use crate::core::lifecycle::ParamVersion;

/// GetParameterHistory of `name` (every page). A parameter that does not exist has no history.
pub async fn parameter_history(aws: &Aws, region: &str, name: &str) -> Result<Vec<ParamVersion>, AwsError> {
    let ssm = aws.ssm(region);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = match ssm
            .get_parameter_history()
            .name(name)
            .max_results(50)
            .set_next_token(token.clone())
            .send()
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let e = AwsError::from_sdk("GetParameterHistory", region, e);
                if e.is_not_found() {
                    return Ok(Vec::new());
                }
                return Err(e);
            }
        };
        out.extend(page.parameters().iter().map(|p| ParamVersion {
            version: p.version(),
            value: p.value().unwrap_or_default().to_string(),
            labels: p.labels().to_vec(),
        }));
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

/// DescribeImages for many ids at once (ids that no longer exist are left out), or, with
/// `filters` (`name=value[,value…]`), the caller's own images that match.
pub async fn describe_images(
    aws: &Aws,
    region: &str,
    ids: &[String],
    filters: &[(String, Vec<String>)],
) -> Result<BTreeMap<String, ImageFacts>, AwsError> {
    let ec2 = aws.ec2(region);
    let mut found = BTreeMap::new();
    if !filters.is_empty() {
        let f: Vec<Filter> = filters
            .iter()
            .map(|(n, v)| Filter::builder().name(n).set_values(Some(v.clone())).build())
            .collect();
        let out = ec2
            .describe_images()
            .owners("self")
            .set_filters(Some(f))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeImages", region, e))?;
        for i in out.images() {
            let f = image_facts(i);
            found.insert(f.ami_id.clone(), f);
        }
        return Ok(found);
    }
    if ids.is_empty() {
        return Ok(found);
    }
    // The image-id filter (unlike ImageIds) ignores ids that are gone instead of failing.
    let out = ec2
        .describe_images()
        .filters(Filter::builder().name("image-id").set_values(Some(ids.to_vec())).build())
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeImages", region, e))?;
    for i in out.images() {
        let f = image_facts(i);
        found.insert(f.ami_id.clone(), f);
    }
    Ok(found)
}

/// DescribeImageReferences for instances, launch templates and SSM parameters: ami → ARNs.
pub async fn image_references(
    aws: &Aws,
    region: &str,
    ids: &[String],
) -> Result<BTreeMap<String, Vec<String>>, AwsError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let types: Vec<ResourceTypeRequest> = [
        ImageReferenceResourceType::Ec2Instance,
        ImageReferenceResourceType::Ec2LaunchTemplate,
        ImageReferenceResourceType::SsmParameter,
    ]
    .into_iter()
    .map(|t| ResourceTypeRequest::builder().resource_type(t).build())
    .collect();
    for chunk in ids.chunks(50) {
        let mut token: Option<String> = None;
        loop {
            let page = aws
                .ec2(region)
                .describe_image_references()
                .set_image_ids(Some(chunk.to_vec()))
                .set_resource_types(Some(types.clone()))
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("DescribeImageReferences", region, e))?;
            for r in page.image_references() {
                if let (Some(i), Some(a)) = (r.image_id(), r.arn()) {
                    out.entry(i.to_string()).or_default().push(a.to_string());
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
    }
    Ok(out)
}
