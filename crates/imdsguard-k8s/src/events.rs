//! Policy status as Kubernetes Events: an invalid policy is reported on the object itself, so
//! `kubectl describe cnp NAME` shows why it is not in force.

use crate::cluster::Cluster;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use std::collections::HashSet;

/// One invalid policy object, as the decoder reported it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyProblem {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub message: String,
}

/// Creates one Warning Event per problem and object version.
pub struct PolicyEvents {
    cluster: Cluster,
    node: String,
    reported: HashSet<(PolicyProblem, String)>,
}

impl PolicyEvents {
    pub fn new(cluster: Cluster, node: String) -> PolicyEvents {
        PolicyEvents {
            cluster,
            node,
            reported: HashSet::new(),
        }
    }

    pub async fn report(&mut self, problem: PolicyProblem) -> Result<bool, kube::Error> {
        let Some((api_version, uid, resource_version)) =
            self.cluster
                .policy_object(&problem.kind, problem.namespace.as_deref(), &problem.name)
        else {
            return Ok(false);
        };
        let key = (problem.clone(), resource_version.clone());
        if self.reported.contains(&key) {
            return Ok(false);
        }
        // Events of cluster-scoped objects live in `default`, where kubectl describe looks.
        let namespace = problem
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", problem.name)),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(api_version),
                kind: Some(problem.kind.clone()),
                name: Some(problem.name.clone()),
                namespace: problem.namespace.clone(),
                uid: Some(uid),
                resource_version: Some(resource_version),
                ..Default::default()
            },
            reason: Some("PolicyInvalid".into()),
            type_: Some("Warning".into()),
            message: Some(format!(
                "{}; the last valid version of this policy, if any, stays in force",
                problem.message
            )),
            source: Some(EventSource {
                component: Some("imdsguard-agent".into()),
                host: Some(self.node.clone()),
            }),
            reporting_component: Some("imdsguard-agent".into()),
            reporting_instance: Some(self.node.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        Api::<Event>::namespaced(self.cluster.client(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        self.reported.insert(key);
        Ok(true)
    }
}
