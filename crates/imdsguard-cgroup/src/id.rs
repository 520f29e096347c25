//! Container IDs as the kubelet reports them in `status.containerStatuses[].containerID`.

use std::fmt;

/// The container runtime behind an ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
}

impl Runtime {
    /// The scheme the kubelet writes (`containerd://`).
    pub fn scheme(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
        }
    }
}

/// A container's runtime and its 64-hex-digit ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId {
    pub runtime: Runtime,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerIdError {
    #[error("{0:?}: expected RUNTIME://ID (containerd, cri-o or docker)")]
    Form(String),
    #[error("{0:?}: unknown container runtime (containerd, cri-o and docker are known)")]
    Runtime(String),
    #[error("{0:?}: a container ID is 64 lowercase hex digits")]
    Id(String),
}

/// Whether `s` is a full container ID: runtimes name cgroups with all 64 digits.
pub(crate) fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ContainerId {
    /// Parses `containerd://0123…` (the kubelet's form).
    pub fn parse(s: &str) -> Result<ContainerId, ContainerIdError> {
        let (scheme, id) = s
            .split_once("://")
            .ok_or_else(|| ContainerIdError::Form(s.to_owned()))?;
        let runtime = match scheme {
            "containerd" => Runtime::Containerd,
            "cri-o" => Runtime::CriO,
            "docker" => Runtime::Docker,
            _ => return Err(ContainerIdError::Runtime(s.to_owned())),
        };
        if !is_full_id(id) {
            return Err(ContainerIdError::Id(s.to_owned()));
        }
        Ok(ContainerId {
            runtime,
            id: id.to_owned(),
        })
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.runtime.scheme(), self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4b2cf8ad3e7bd6fc1b8a51f44d8d4d0e59f4a4e8be5c9f1d7aa3f7c1b1c2d3e4";

    #[test]
    fn the_kubelets_forms_parse_and_print_back() {
        for (scheme, runtime) in [
            ("containerd", Runtime::Containerd),
            ("cri-o", Runtime::CriO),
            ("docker", Runtime::Docker),
        ] {
            let text = format!("{scheme}://{ID}");
            let id = ContainerId::parse(&text).expect("valid");
            assert_eq!((id.runtime, id.id.as_str()), (runtime, ID));
            assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn anything_else_is_refused_with_what_was_expected() {
        assert!(matches!(
            ContainerId::parse(ID),
            Err(ContainerIdError::Form(_))
        ));
        assert!(matches!(
            ContainerId::parse(&format!("rkt://{ID}")),
            Err(ContainerIdError::Runtime(_))
        ));
        for bad in ["abc", &ID[1..], &ID.to_uppercase(), &format!("{ID}0")] {
            assert!(
                matches!(
                    ContainerId::parse(&format!("containerd://{bad}")),
                    Err(ContainerIdError::Id(_))
                ),
                "{bad}"
            );
        }
    }
}
