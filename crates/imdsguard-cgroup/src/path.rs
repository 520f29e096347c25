//! What a cgroup v2 path says about its pod and container. The kubelet puts every pod in a
//! cgroup named after its UID, and the runtime puts every container in a cgroup named after its
//! ID, below the pod's; a process's cgroup path therefore names both, whatever it is below them.
//!
//! | driver   | pod component                               | container component              |
//! |----------|---------------------------------------------|----------------------------------|
//! | systemd  | `kubepods-burstable-pod<uid, _ for ->.slice` | `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` |
//! | cgroupfs | `pod<uid>`                                   | `<id>`                           |

use crate::id::{Runtime, is_full_id};

/// A cgroup's place in Kubernetes' hierarchy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupPlace {
    /// The pod's UID (with dashes, as the API writes it), when the path is inside a pod.
    pub pod_uid: Option<String>,
    /// The container's 64-hex-digit ID, when the path is inside a container's cgroup (or one of
    /// its descendants).
    pub container_id: Option<String>,
    /// The runtime, when the component's name says it (systemd driver); the cgroupfs driver's
    /// bare IDs do not.
    pub runtime: Option<Runtime>,
}

/// Reads a cgroup path (`/kubepods.slice/…/cri-containerd-<id>.scope`, or a full path below the
/// mount point). A path outside every pod gives the default: nothing to name.
pub fn classify(path: &str) -> CgroupPlace {
    let mut place = CgroupPlace::default();
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if place.pod_uid.is_none() {
            place.pod_uid = pod_uid(component);
            continue;
        }
        if let Some((runtime, id)) = container(component) {
            place.container_id = Some(id.to_owned());
            place.runtime = runtime;
            // The first container component below the pod is the container; anything below
            // it is its own subtree (a process's nested cgroups).
            break;
        }
    }
    place
}

/// `kubepods-burstable-pod1234_5678.slice` (systemd) or `pod1234-5678` (cgroupfs).
fn pod_uid(component: &str) -> Option<String> {
    if let Some(slice) = component.strip_suffix(".slice") {
        let (_, uid) = slice.rsplit_once("-pod")?;
        let uid = uid.replace('_', "-");
        return is_uid(&uid).then_some(uid);
    }
    let uid = component.strip_prefix("pod")?;
    is_uid(uid).then(|| uid.to_owned())
}

/// A Kubernetes UID: 36 characters of hex digits and dashes (8-4-4-4-12).
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, or a bare `<id>`.
/// CRI-O's `crio-conmon-<id>.scope` holds the container's monitor, not the container: not one.
fn container(component: &str) -> Option<(Option<Runtime>, &str)> {
    if let Some(scope) = component.strip_suffix(".scope") {
        for (prefix, runtime) in [
            ("cri-containerd-", Runtime::Containerd),
            ("crio-", Runtime::CriO),
            ("docker-", Runtime::Docker),
        ] {
            if let Some(id) = scope.strip_prefix(prefix)
                && is_full_id(id)
            {
                return Some((Some(runtime), id));
            }
        }
        return None;
    }
    is_full_id(component).then_some((None, component))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4b2cf8ad3e7bd6fc1b8a51f44d8d4d0e59f4a4e8be5c9f1d7aa3f7c1b1c2d3e4";
    const UID: &str = "8c1e3a8e-5f6b-4c2d-9e0f-1a2b3c4d5e6f";

    fn uid_() -> String {
        UID.replace('-', "_")
    }

    #[test]
    fn the_systemd_driver_names_pod_and_container() {
        for (scope, runtime) in [
            (format!("cri-containerd-{ID}.scope"), Runtime::Containerd),
            (format!("crio-{ID}.scope"), Runtime::CriO),
            (format!("docker-{ID}.scope"), Runtime::Docker),
        ] {
            let path = format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/{scope}",
                uid_()
            );
            assert_eq!(
                classify(&path),
                CgroupPlace {
                    pod_uid: Some(UID.into()),
                    container_id: Some(ID.into()),
                    runtime: Some(runtime),
                },
                "{path}"
            );
        }
        // Guaranteed pods have no QoS slice.
        let path = format!(
            "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope",
            uid_()
        );
        assert_eq!(classify(&path).container_id.as_deref(), Some(ID));
    }

    #[test]
    fn the_cgroupfs_driver_names_pod_and_container_without_a_runtime() {
        let path = format!("/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(
            classify(&path),
            CgroupPlace {
                pod_uid: Some(UID.into()),
                container_id: Some(ID.into()),
                runtime: None,
            }
        );
    }

    #[test]
    fn a_containers_descendants_belong_to_it_and_the_mount_point_does_not_matter() {
        let path = format!(
            "/sys/fs/cgroup/unified/kubepods/pod{UID}/{ID}/init.scope/worker/{}",
            "f".repeat(64)
        );
        let place = classify(&path);
        assert_eq!(place.container_id.as_deref(), Some(ID));
        assert_eq!(place.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn the_pod_alone_the_monitor_and_the_node_name_no_container() {
        let pod_only = format!("/kubepods.slice/kubepods-burstable-pod{}.slice", uid_());
        assert_eq!(classify(&pod_only).pod_uid.as_deref(), Some(UID));
        assert_eq!(classify(&pod_only).container_id, None);
        let conmon = format!("{pod_only}/crio-conmon-{ID}.scope");
        assert_eq!(classify(&conmon).container_id, None);
        for node in [
            "/system.slice/kubelet.service",
            "/user.slice/user-0.slice/session-1.scope",
            &format!("/system.slice/docker-{ID}.scope"),
            "/",
            "",
        ] {
            assert_eq!(classify(node), CgroupPlace::default(), "{node}");
        }
    }

    #[test]
    fn near_misses_are_not_pods_or_containers() {
        for path in [
            format!("/kubepods/pod{}/{ID}", &UID[1..]),
            format!("/kubepods/podX{UID}/{ID}"),
            format!("/kubepods.slice/kubepods-burstable-pod{}.scope", uid_()),
        ] {
            assert_eq!(classify(&path).pod_uid, None, "{path}");
        }
        let short = format!("/kubepods/pod{UID}/{}", &ID[..63]);
        assert_eq!(classify(&short).container_id, None);
        let upper = format!("/kubepods/pod{UID}/{}", ID.to_uppercase());
        assert_eq!(classify(&upper).container_id, None);
    }
}
