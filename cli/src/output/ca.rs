//! The cluster CA and a rotation's progress as admins see them (`nexus admin ca status|rotate`).
//! Pure: data in, text out.

use nexus_protocol::ca_rotation::{CaStatus, PartyProgress};
use serde_json::{Value, json};

use super::{rfc3339, table};

fn short(fingerprint: &str) -> &str {
    &fingerprint[..16.min(fingerprint.len())]
}

fn party_state(party: &PartyProgress) -> &'static str {
    match (party.trusts, party.reissued) {
        (_, true) => "reissued",
        (true, false) => "trusts-both",
        (false, false) => "waiting",
    }
}

/// `{"signer", "trusted_cas", "rotation": null | {"phase", "started_at", "started_by", "old_ca",
/// "new_ca", "parties": [{"identity", "trusts", "reissued"}], "waiting": [identity]}, "last":
/// null | {"started_at", "finished_at", "new_ca", "left": [identity]}}`.
pub fn status_json(status: &CaStatus) -> Value {
    let trusted = nexus_protocol::transport::certificates_der(&status.trusted_pem)
        .iter()
        .map(|der| nexus_protocol::ca_rotation::fingerprint(der))
        .collect::<Vec<_>>();
    json!({
        "signer": status.signer,
        "trusted_cas": trusted,
        "rotation": status.rotation.as_ref().map(|rotation| json!({
            "phase": rotation.phase.as_str(),
            "started_at": rfc3339(rotation.started_at),
            "started_by": rotation.started_by,
            "old_ca": rotation.old_ca,
            "new_ca": rotation.new_ca,
            "parties": rotation.parties.iter().map(|party| json!({
                "identity": party.identity.to_string(),
                "trusts": party.trusts,
                "reissued": party.reissued,
            })).collect::<Vec<_>>(),
            "waiting": waiting(status),
        })),
        "last": status.last.as_ref().map(|last| json!({
            "started_at": rfc3339(last.started_at),
            "finished_at": rfc3339(last.finished_at),
            "new_ca": last.new_ca,
            "left": last.left.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })),
    })
}

/// Who the rotation in progress waits for in its phase.
pub fn waiting(status: &CaStatus) -> Vec<String> {
    let Some(rotation) = &status.rotation else {
        return Vec::new();
    };
    rotation
        .parties
        .iter()
        .filter(|party| match rotation.phase {
            nexus_protocol::ca_rotation::CaPhase::Trust => !party.trusts,
            nexus_protocol::ca_rotation::CaPhase::Reissue => !party.reissued,
        })
        .map(|party| party.identity.to_string())
        .collect()
}

/// One line of progress, printed each time it changes while `ca rotate` waits.
pub fn progress_line(status: &CaStatus) -> String {
    match &status.rotation {
        Some(rotation) => {
            let waiting = waiting(status);
            let done = rotation.parties.len() - waiting.len();
            format!(
                "{}: {done}/{} done{}\n",
                rotation.phase.as_str(),
                rotation.parties.len(),
                if waiting.is_empty() {
                    String::new()
                } else {
                    format!(", waiting for {}", waiting.join(", "))
                }
            )
        }
        None => "finished\n".into(),
    }
}

pub fn status_text(status: &CaStatus) -> String {
    let mut text = format!("CA in force: {} (signs)\n", short(&status.signer));
    match &status.rotation {
        Some(rotation) => {
            text.push_str(&format!(
                "Rotation to {} started {} by {}: {} phase\n\n",
                short(&rotation.new_ca),
                rfc3339(rotation.started_at),
                rotation.started_by,
                rotation.phase.as_str()
            ));
            let rows = rotation
                .parties
                .iter()
                .map(|party| vec![party.identity.to_string(), party_state(party).to_string()])
                .collect();
            text.push_str(&table(&["PARTY", "STATE"], rows));
        }
        None => text.push_str("No rotation in progress.\n"),
    }
    if let Some(last) = &status.last {
        text.push_str(&format!(
            "Last rotation: to {}, finished {}",
            short(&last.new_ca),
            rfc3339(last.finished_at)
        ));
        if last.left.is_empty() {
            text.push('\n');
        } else {
            let left: Vec<String> = last.left.iter().map(ToString::to_string).collect();
            text.push_str(&format!(
                " by force; left to enrol again: {}\n",
                left.join(", ")
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use nexus_protocol::ca_rotation::{CaPhase, CaRotationView, FinishedRotation};
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::identity::Identity;
    use nexus_protocol::{HostId, NodeId};

    use super::*;

    fn status() -> CaStatus {
        let party = |identity, trusts, reissued| PartyProgress {
            identity,
            trusts,
            reissued,
        };
        CaStatus {
            trusted_pem: String::new(),
            signer: "a".repeat(64),
            rotation: Some(CaRotationView {
                phase: CaPhase::Trust,
                started_at: Timestamp::from_millis(0),
                started_by: "admin root".into(),
                old_ca: "a".repeat(64),
                new_ca: "b".repeat(64),
                parties: vec![
                    party(Identity::Coordinator(NodeId::new(1).unwrap()), true, false),
                    party(Identity::Agent(HostId::new("h1").unwrap()), false, false),
                ],
            }),
            last: Some(FinishedRotation {
                started_at: Timestamp::from_millis(0),
                finished_at: Timestamp::from_millis(60_000),
                new_ca: "a".repeat(64),
                left: vec![Identity::Agent(HostId::new("h9").unwrap())],
            }),
        }
    }

    #[test]
    fn a_rotation_shows_its_phase_and_who_is_left() {
        let status = status();
        expect![[r#"
            CA in force: aaaaaaaaaaaaaaaa (signs)
            Rotation to bbbbbbbbbbbbbbbb started 1970-01-01T00:00:00Z by admin root: trust phase

            PARTY          STATE
            coordinator 1  trusts-both
            agent h1       waiting
            Last rotation: to aaaaaaaaaaaaaaaa, finished 1970-01-01T00:01:00Z by force; left to enrol again: agent h9
        "#]]
        .assert_eq(&status_text(&status));
        assert_eq!(
            progress_line(&status),
            "trust: 1/2 done, waiting for agent h1\n"
        );
        let json = status_json(&status);
        assert_eq!(json["rotation"]["waiting"], json!(["agent h1"]));
        assert_eq!(json["last"]["left"], json!(["agent h9"]));
        let none = CaStatus {
            rotation: None,
            last: None,
            ..status
        };
        assert_eq!(progress_line(&none), "finished\n");
        assert!(status_text(&none).contains("No rotation in progress."));
    }
}
