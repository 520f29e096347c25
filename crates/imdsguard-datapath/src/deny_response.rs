//! How a policy deny is answered (`--deny-response`).

use std::fmt;
use std::str::FromStr;

/// How a policy deny is answered. `Drop` is silent: the client waits for its timeout. `Reject`
/// answers at once: a refused connect()/sendmsg() fails with ECONNREFUSED at the cgroup hooks,
/// and at TC a denied TCP packet gets a RST and anything else an ICMP "administratively
/// prohibited" unreachable, sent back into the pod. Flows stay DROPPED with their policy drop
/// reason either way (Hubble has no REJECTED verdict).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DenyResponse {
    #[default]
    Drop,
    Reject,
}

impl DenyResponse {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyResponse::Drop => "drop",
            DenyResponse::Reject => "reject",
        }
    }
}

impl fmt::Display for DenyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--deny-response` value that is neither `drop` nor `reject`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown deny response {0:?}: expected \"drop\" or \"reject\"")]
pub struct ParseDenyResponseError(pub String);

impl FromStr for DenyResponse {
    type Err = ParseDenyResponseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "drop" => Ok(DenyResponse::Drop),
            "reject" => Ok(DenyResponse::Reject),
            _ => Err(ParseDenyResponseError(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for d in [DenyResponse::Drop, DenyResponse::Reject] {
            assert_eq!(d.to_string().parse::<DenyResponse>(), Ok(d));
        }
        assert_eq!("Reject".parse::<DenyResponse>(), Ok(DenyResponse::Reject));
        assert!("icmp".parse::<DenyResponse>().is_err());
        assert_eq!(DenyResponse::default(), DenyResponse::Drop);
    }
}
