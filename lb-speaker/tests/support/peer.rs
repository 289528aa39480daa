//! Which load balancers a side-by-side benchmark measures: groundwork, MetalLB, or both (the default),
//! chosen by an environment variable so that one side can be run alone.

/// One of the load balancers measured side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Groundwork,
    MetalLb,
}

impl Peer {
    /// Lower-case, as in the environment variable and the printed tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Groundwork => "groundwork",
            Self::MetalLb => "metallb",
        }
    }

    /// The peers `var` names (`groundwork` or `metallb`), both when it is unset or anything else.
    pub fn from_env(var: &str) -> Vec<Self> {
        match std::env::var(var).as_deref() {
            Ok("groundwork") => vec![Self::Groundwork],
            Ok("metallb") => vec![Self::MetalLb],
            _ => vec![Self::Groundwork, Self::MetalLb],
        }
    }
}
