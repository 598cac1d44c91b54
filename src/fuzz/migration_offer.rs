//! The fuzz body of a migration offer from a hostile source (`fuzz/fuzz_targets/migration_offer.rs`),
//! and the tests that keep its seeds in step with what a real source sends.

use super::{check_conservation, check_rebuild};
use crate::ldm::Role;

/// A migration offer from a hostile peer: `data` is the domain definition a source sends (the
/// JSON record of `registry::model::Domain`), offered to a target with `migrate-reserve` and,
/// when reserved, committed. Invariants: nothing panics; a refused offer leaves every pool as
/// it was and no record; a reservation and a commit conserve every CPU, crypto unit and byte,
/// and the registry rebuilt from its records equals the live one; a domain taken over can be
/// stopped, unbound and removed, and then every pool is as before the offer.
pub fn migration_offer(data: &[u8]) {
    let _ = offer_reach(data);
}

/// How far an offer got.
#[derive(Debug, PartialEq, Eq)]
enum OfferReach {
    Refused,
    Aborted,
    /// Taken over, but removing it was refused (it is left as it came).
    Committed,
    /// Taken over, then stopped, unbound and removed.
    Removed,
}

fn offer_reach(data: &[u8]) -> OfferReach {
    use crate::ldm::Action;
    use crate::migration::wire::{Answer, Message, Offer, Request};
    use crate::migration::{MigrationId, Token};
    use crate::registry::machine::{Machine, MachineConfig};
    use crate::registry::{Registry, Settings};
    let machine = Machine::from_config(&MachineConfig::default()).expect("default machine");
    let mut reg = Registry::new(machine, Settings::default(), 7, 1_000).expect("registry");
    // The volume a definition may use, as a target would have it (primary-vsw0 is there).
    offer_target_setup(&mut reg);
    let before = reg.pools().clone();
    let id = MigrationId(0x5eed);
    let message = |request: Request| Message {
        id,
        domain: "ldg1".into(),
        request,
    };
    let offer = Offer {
        source_daemon: 0xfeed,
        definition: data.to_vec(),
        force: data.first().is_some_and(|b| b & 1 == 1),
    };
    let reserved = ask(&mut reg, &message(Request::Reserve(offer)).to_document());
    let token = match Answer::from_reply(Action::MigrateReserve, &reserved) {
        Answer::Success {
            token: Some(token), ..
        } => token,
        Answer::Success { token: None, .. } => panic!("a reservation without a token"),
        Answer::Failure(_) => {
            assert_eq!(reg.pools(), &before, "a refused offer holds resources");
            assert_eq!(reg.migrations().count(), 0, "a refused offer left a record");
            return OfferReach::Refused;
        }
    };
    check_conservation(&reg);
    check_rebuild(&mut reg);
    // Commit with no chunks: the digest of nothing, as a source of a domain that is not running
    // sends it.
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b"").as_ref());
    let committed = ask(
        &mut reg,
        &message(Request::Commit {
            token: Token(token.0),
            chunks: 0,
            digest,
        })
        .to_document(),
    );
    check_conservation(&reg);
    check_rebuild(&mut reg);
    let Answer::Success {
        outcome: Some(crate::migration::Outcome::Committed),
        ..
    } = Answer::from_reply(Action::MigrateCommit, &committed)
    else {
        // Refused or aborted: the reservation is released whole.
        assert_eq!(
            reg.pools(),
            &before,
            "an aborted reservation holds resources"
        );
        return OfferReach::Aborted;
    };
    for action in [
        Action::StopDomain,
        Action::UnbindDomain,
        Action::RemoveDomain,
    ] {
        let names = ["ldg1".to_owned()];
        ask(
            &mut reg,
            &crate::cli::request::on_domains(action, &names, false, &[]),
        );
        check_conservation(&reg);
    }
    if reg.domain("ldg1").is_some() {
        return OfferReach::Committed;
    }
    assert_eq!(reg.pools(), &before, "a removed domain left resources held");
    OfferReach::Removed
}

/// What a target offers a migrated domain beyond a fresh machine: volume `vol-shared` on
/// `primary-vds0` (the seeds' vdisk uses it).
fn offer_target_setup(reg: &mut crate::registry::Registry) {
    let add = crate::cli::request::add_vdsdev(
        "/dev/zvol/shared",
        "vol-shared@primary-vds0",
        &[],
        false,
        Some("primary"),
    )
    .expect("a valid add-vdsdev");
    let reply = ask(reg, &add);
    assert_eq!(reply.status, crate::ldm::Status::Success, "{reply:?}");
}

/// Applies `document` as a write user and reads the reply back as a client would.
fn ask(reg: &mut crate::registry::Registry, document: &crate::ldm::Document) -> crate::ldm::Reply {
    let mut run = crate::registry::Registry::begin(document.clone(), Role::Write);
    let progress = reg.advance(&mut run, 2_000);
    assert!(
        !matches!(progress, crate::registry::run::Progress::Waiting(_)),
        "nothing here waits"
    );
    let mut out = Vec::new();
    crate::ldm::write_response(&mut out, &run.into_response().0);
    let _ = reg.take_dirty();
    let _ = reg.take_events();
    let _ = reg.take_effects();
    crate::ldm::Reply::from_xml(&String::from_utf8(out).expect("UTF-8")).expect("a readable reply")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::request;
    use crate::ldm::Action;

    /// The definitions a real source sends of one guest (4 vCPUs, 2G, a vdisk, a vnet, a
    /// variable), inactive, bound and active: the seeds of `fuzz/corpus/migration_offer`.
    fn seed_definitions() -> Vec<(&'static str, Vec<u8>)> {
        use crate::registry::machine::{Machine, MachineConfig};
        use crate::registry::{Registry, Settings};
        let machine = Machine::from_config(&MachineConfig::default()).unwrap();
        let mut reg = Registry::new(machine, Settings::default(), 11, 1_000).unwrap();
        offer_target_setup(&mut reg);
        let guest = ["ldg1".to_owned()];
        let steps = [
            request::add_domain(&guest, &[]).unwrap(),
            request::vcpu(Action::AddVcpu, "4", "ldg1", false).unwrap(),
            request::memory(Action::AddMemory, "2G", "ldg1", false).unwrap(),
            request::add_vdisk("disk0", "vol-shared@primary-vds0", "ldg1", &[]).unwrap(),
            request::vnet(Action::AddVnet, "net0", Some("primary-vsw0"), "ldg1", &[]).unwrap(),
            request::variables(Action::AddVariable, &["boot-device=disk0".into()], "ldg1").unwrap(),
        ];
        for step in steps {
            let reply = ask(&mut reg, &step);
            assert_eq!(reply.status, crate::ldm::Status::Success, "{reply:?}");
        }
        let definition = |reg: &Registry| serde_json::to_vec(reg.domain("ldg1").unwrap()).unwrap();
        let mut seeds = vec![("inactive.json", definition(&reg))];
        for (action, seed) in [
            (Action::BindDomain, "bound.json"),
            (Action::StartDomain, "active.json"),
        ] {
            let reply = ask(&mut reg, &request::on_domains(action, &guest, false, &[]));
            assert_eq!(reply.status, crate::ldm::Status::Success, "{reply:?}");
            seeds.push((seed, definition(&reg)));
        }
        seeds
    }

    /// The seeds go all the way (so the fuzzer starts from offers that reach every step), and
    /// the corpus holds them as generated (`LDMD_WRITE_SEEDS=1` rewrites them).
    #[test]
    fn seed_offers_are_reserved_committed_and_removed() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/migration_offer");
        for (file, definition) in seed_definitions() {
            assert_eq!(offer_reach(&definition), OfferReach::Removed, "{file}");
            let path = dir.join(file);
            if std::env::var_os("LDMD_WRITE_SEEDS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &definition).unwrap();
            }
            assert_eq!(
                std::fs::read(&path).unwrap_or_default(),
                definition,
                "{} is stale: run with LDMD_WRITE_SEEDS=1",
                path.display()
            );
        }
        // And what a hostile peer might send instead is refused, holding nothing.
        assert_eq!(offer_reach(b"{"), OfferReach::Refused);
        assert_eq!(offer_reach(b""), OfferReach::Refused);
    }

    /// The fuzzer's first finding (`fuzz/corpus/migration_offer/a-vnet-with-the-domains-own-mac.json`):
    /// a definition whose vnet had the domain's own MAC was reserved, and the target's records
    /// then claimed that MAC twice, so the target's next start would have refused its store.
    #[test]
    fn a_definition_that_claims_a_mac_twice_or_past_48_bits_is_refused() {
        let (_, inactive) = seed_definitions().remove(0);
        let mut definition: serde_json::Value = serde_json::from_slice(&inactive).unwrap();
        let own = definition["mac"].clone();
        definition["vnets"][0]["mac"] = own;
        let twice = serde_json::to_vec(&definition).unwrap();
        assert_eq!(offer_reach(&twice), OfferReach::Refused);
        let mut definition: serde_json::Value = serde_json::from_slice(&inactive).unwrap();
        definition["vnets"][0]["mac"] = (1u64 << 48).into();
        let wide = serde_json::to_vec(&definition).unwrap();
        assert_eq!(offer_reach(&wide), OfferReach::Refused);
    }
}
