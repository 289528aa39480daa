//! What lb-controller writes into a Service's status besides `status.loadBalancer.ingress`.
//!
//! The node(s) announcing the Service's addresses are a status condition, written on the status
//! subresource, so the controller needs no write access to Services themselves (it could otherwise change
//! what a Service selects). Users read it with
//! `kubectl get svc -o jsonpath='{.status.conditions[?(@.type=="groundwork.dev/AnnouncingNode")].message}'`.

use k8s_openapi::api::core::v1::Service;

/// The condition type; `status` `True`, `reason` the mode (`Layer2`), `message` the node names,
/// comma-separated. Absent while no node announces.
pub const ANNOUNCING_CONDITION: &str = "groundwork.dev/AnnouncingNode";

/// The node(s) the Service's [`ANNOUNCING_CONDITION`] names.
pub fn announcing_node(service: &Service) -> Option<String> {
    service
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ANNOUNCING_CONDITION && c.status == "True")
        .map(|c| c.message.clone())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ServiceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;

    fn with(conditions: Vec<(&str, &str, &str)>) -> Service {
        Service {
            status: Some(ServiceStatus {
                conditions: Some(
                    conditions
                        .into_iter()
                        .map(|(type_, status, message)| Condition {
                            type_: type_.to_owned(),
                            status: status.to_owned(),
                            message: message.to_owned(),
                            reason: "Layer2".to_owned(),
                            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                            observed_generation: None,
                        })
                        .collect(),
                ),
                ..ServiceStatus::default()
            }),
            ..Service::default()
        }
    }

    #[test]
    fn the_announcing_node_is_read_from_its_condition_only() {
        assert_eq!(announcing_node(&Service::default()), None);
        let service = with(vec![
            ("Other", "True", "x"),
            (ANNOUNCING_CONDITION, "True", "n1,n2"),
        ]);
        assert_eq!(announcing_node(&service).as_deref(), Some("n1,n2"));
        assert_eq!(
            announcing_node(&with(vec![(ANNOUNCING_CONDITION, "False", "n1")])),
            None
        );
    }
}
