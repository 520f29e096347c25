//! `imdsguard install`'s apply: rendered manifests sent to the API server with server-side apply,
//! as `kubectl apply --server-side` does. Existing CustomResourceDefinitions are never replaced:
//! they are Cilium's own, or an earlier install's.

use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};

/// Why a manifest was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("parsing a manifest:\n{text}")]
    Parse {
        text: String,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("the API server does not serve {api_version} {kind} (needed for {name})")]
    NotServed {
        api_version: String,
        kind: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{0}: not a Kubernetes object")]
    NotAnObject(String, #[source] serde_json::Error),
    // The cause is part of the message, as kubectl words it; not repeated as a source.
    #[error("applying {what}: {error}")]
    Apply {
        what: String,
        error: Box<kube::Error>,
    },
}

/// The YAML documents of a multi-document text, comments and empty documents left out.
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, ApplyError> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line == "---" {
            let has_content = current
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
            if has_content {
                let doc: serde_json::Value =
                    serde_saphyr::from_str(&current).map_err(|source| ApplyError::Parse {
                        text: current.clone(),
                        source: Box::new(source),
                    })?;
                docs.push(doc);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    Ok(docs)
}

/// Applies every document of `text`, calling `done` with a kubectl-style line for each
/// (`daemonsets.apps/imdsguard serverside-applied`).
pub async fn apply(
    client: &kube::Client,
    text: &str,
    mut done: impl FnMut(&str),
) -> Result<(), ApplyError> {
    for doc in documents(text)? {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, &kind);
        let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|source| ApplyError::NotServed {
                api_version: api_version.to_owned(),
                kind: kind.clone(),
                name: name.clone(),
                source: Box::new(source),
            })?;
        let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
            Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
                Api::namespaced_with(client.clone(), ns, &ar)
            }
            _ => Api::all_with(client.clone(), &ar),
        };
        let what = format!("{}.{}/{name}", ar.plural, ar.group)
            .replace("./", "/")
            .to_lowercase();
        let failed = |error| ApplyError::Apply {
            what: what.clone(),
            error: Box::new(error),
        };
        if kind == "CustomResourceDefinition" && api.get_opt(&name).await.map_err(failed)?.is_some()
        {
            done(&format!("{what} unchanged (exists; left as it is)"));
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(doc.clone())
            .map_err(|e| ApplyError::NotAnObject(what.clone(), e))?;
        api.patch(
            &name,
            &PatchParams::apply("imdsguard-install").force(),
            &Patch::Apply(&obj),
        )
        .await
        .map_err(failed)?;
        done(&format!("{what} serverside-applied"));
    }
    Ok(())
}
