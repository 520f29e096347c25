//! The agent's errors: what stopped it from starting or running. Later trouble (a bad file, an
//! interface that vanished) is logged and counted instead, and the last good state stays.

use imdsguard_datapath::loader::DatapathError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration cannot work (says which setting, and what to do).
    #[error("{0}")]
    Config(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}")]
    Datapath {
        context: String,
        #[source]
        source: Box<DatapathError>,
    },
    /// The cluster could not be reached or read (the cluster's error says why).
    #[error(transparent)]
    Cluster(#[from] imdsguard_k8s::ClusterError),
    #[error("{context}")]
    Other {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl AgentError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
        let context = context.into();
        move |source| AgentError::Io { context, source }
    }

    pub(crate) fn datapath(context: impl Into<String>) -> impl FnOnce(DatapathError) -> AgentError {
        let context = context.into();
        move |source| AgentError::Datapath {
            context,
            source: Box::new(source),
        }
    }

    pub(crate) fn other<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> AgentError {
        let context = context.into();
        move |source| AgentError::Other {
            context,
            source: source.into(),
        }
    }
}
