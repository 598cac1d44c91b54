//! `ldm-load mixed`: a read-mostly mix of LDM actions, each client on domains of its own
//! (`load-<run>-<client>-<k>`, at most three at a time), as operators' tools use a daemon: they look
//! far more than they change. Each step is one request, drawn at random (a fixed seed per
//! client, so runs repeat) by the weights of `--mix`:
//!
//! | operation | default weight | what |
//! |---|---|---|
//! | list-domain | 30 | one own domain (`ldm ls NAME`) |
//! | list-bindings | 20 | one own domain |
//! | list-constraints | 20 | one own domain |
//! | set-vcpu | 10 | 4 virtual CPUs on one own domain |
//! | set-memory | 10 | 2G on one own domain |
//! | add-domain | 5 | a new own domain |
//! | remove-domain | 5 | the oldest own domain |
//!
//! A draw the client's domains cannot satisfy becomes the change that can: with no domain every
//! operation is an add-domain, and an add-domain at three domains removes the oldest instead.
//! When the run ends, the cleanup removes every domain the client still holds (unmeasured), so
//! a run leaves none behind.

use std::collections::VecDeque;

use clap::Args;

use crate::connect::Connect;
use crate::driver::{self, Client, Ctx, Drive, Workload};
use crate::durability::DurabilityArgs;
use crate::ldm::{self, Action};
use crate::session::{Session, SessionError};

/// The domains one client holds at most.
const DOMAINS_PER_CLIENT_MAX: usize = 3;

/// The mix's operations, in table order.
const OPERATIONS: [Action; 7] = [
    Action::ListDomain,
    Action::ListBindings,
    Action::ListConstraints,
    Action::SetVcpu,
    Action::SetMemory,
    Action::AddDomain,
    Action::RemoveDomain,
];

/// Positions of the two changes a draw may turn into.
const ADD: usize = 5;
const REMOVE: usize = 6;

const NAMES: &[&str] = &[
    "list-domain",
    "list-bindings",
    "list-constraints",
    "set-vcpu",
    "set-memory",
    "add-domain",
    "remove-domain",
];

const MIX_DEFAULT: &str = "list-domain=30,list-bindings=20,list-constraints=20,set-vcpu=10,set-memory=10,add-domain=5,remove-domain=5";

#[derive(Args)]
pub struct MixedArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(flatten)]
    pub drive: Drive,
    /// Weights of the operations, `name=weight` separated by commas; operations left out
    /// weigh 0.
    #[arg(long, default_value = MIX_DEFAULT, value_parser = parse_mix)]
    pub mix: Mix,
    #[command(flatten)]
    pub durability: DurabilityArgs,
}

/// The operations of [`NAMES`] that are durable writes.
const WRITES: &[&str] = &["set-vcpu", "set-memory", "add-domain", "remove-domain"];

/// A weight per operation of [`OPERATIONS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix([u32; OPERATIONS.len()]);

/// Reads `name=weight,...`; at least one weight must be above zero.
fn parse_mix(text: &str) -> Result<Mix, String> {
    let mut weights = [0; OPERATIONS.len()];
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not name=weight"))?;
        let index = NAMES
            .iter()
            .position(|&n| n == name.trim())
            .ok_or_else(|| {
                format!(
                    "'{name}' is not one of the mix's operations ({})",
                    NAMES.join(", ")
                )
            })?;
        weights[index] = weight
            .trim()
            .parse()
            .map_err(|_| format!("'{weight}' is not a whole number"))?;
    }
    if weights.iter().all(|&w| w == 0) {
        return Err("the mix needs one weight above zero".into());
    }
    Ok(Mix(weights))
}

impl Mix {
    /// The operation a draw `r` (uniform over u64) picks.
    fn pick(&self, r: u64) -> usize {
        let total: u64 = self.0.iter().map(|&w| u64::from(w)).sum();
        let mut point = r % total;
        for (index, &weight) in self.0.iter().enumerate() {
            if point < u64::from(weight) {
                return index;
            }
            point -= u64::from(weight);
        }
        unreachable!("point < total")
    }
}

pub async fn mixed(args: MixedArgs) -> i32 {
    let watched = Some((&args.durability, WRITES));
    driver::main_watched(Mixed { mix: args.mix }, &args.connect, &args.drive, watched).await
}

pub struct Mixed {
    pub mix: Mix,
}

impl Workload for Mixed {
    type Client = MixedClient;

    fn scenario(&self) -> &'static str {
        "mixed"
    }

    fn operations(&self) -> &'static [&'static str] {
        NAMES
    }

    fn client(&self, index: usize, session: Option<Session>) -> MixedClient {
        MixedClient {
            index,
            session: session.expect("a mixed client holds a session"),
            plan: Plan::new(self.mix.clone(), index as u64),
        }
    }
}

pub struct MixedClient {
    index: usize,
    session: Session,
    plan: Plan,
}

/// One client's draws and the domains it holds: what to do next, and what a reply changed.
struct Plan {
    mix: Mix,
    rng: Rng,
    /// The `k` of each domain the client holds, oldest first.
    held: VecDeque<u64>,
    /// The `k` of the next domain it adds.
    next: u64,
}

impl Plan {
    fn new(mix: Mix, seed: u64) -> Plan {
        Plan {
            mix,
            rng: Rng::new(seed),
            held: VecDeque::with_capacity(DOMAINS_PER_CLIENT_MAX),
            next: 0,
        }
    }

    /// What to do next: (operation, the `k` of the domain it is done to).
    fn choose(&mut self) -> (usize, u64) {
        let drawn = self.mix.pick(self.rng.next());
        let Some(&oldest) = self.held.front() else {
            return (ADD, self.next);
        };
        match drawn {
            ADD if self.held.len() >= DOMAINS_PER_CLIENT_MAX => (REMOVE, oldest),
            ADD => (ADD, self.next),
            REMOVE => (REMOVE, oldest),
            _ => {
                let pick = self.rng.next() as usize % self.held.len();
                (drawn, self.held[pick])
            }
        }
    }

    /// The reply to what [`Plan::choose`] gave.
    fn applied(&mut self, operation: usize, k: u64, success: bool) {
        match operation {
            ADD => {
                self.next = k + 1;
                if success {
                    self.held.push_back(k);
                }
            }
            // A failed removal keeps the domain, for the cleanup to try again.
            REMOVE if success => {
                self.held.retain(|&held| held != k);
            }
            _ => {}
        }
    }
}

impl Client for MixedClient {
    async fn step(&mut self, ctx: &mut Ctx) -> Result<(), SessionError> {
        let (operation, k) = self.plan.choose();
        let domain = ldm::domain_name(self.index, k);
        let document = OPERATIONS[operation].document(Some(&domain));
        let outcome = ctx
            .request(&mut self.session, operation, &domain, &document)
            .await?;
        self.plan.applied(operation, k, outcome.success);
        Ok(())
    }

    async fn cleanup(&mut self, ctx: &mut Ctx) -> Result<(), SessionError> {
        while let Some(k) = self.plan.held.pop_front() {
            let domain = ldm::domain_name(self.index, k);
            let document = Action::RemoveDomain.document(Some(&domain));
            ctx.request(&mut self.session, REMOVE, &domain, &document)
                .await?;
        }
        Ok(())
    }

    fn into_session(self) -> Option<Session> {
        Some(self.session)
    }
}

/// xorshift64* seeded through splitmix64: a few lines instead of a dependency, and only the
/// mix's draws depend on it.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    use crate::Scenario;
    use crate::testing::{Answers, Ldmd, block_on, parse, scenario};

    #[test]
    fn the_tables_agree_and_the_default_mix_is_read_mostly() {
        assert_eq!(OPERATIONS.map(Action::name), NAMES);
        assert_eq!(
            (OPERATIONS[ADD], OPERATIONS[REMOVE]),
            (Action::AddDomain, Action::RemoveDomain)
        );
        let Mix(weights) = parse_mix(MIX_DEFAULT).unwrap();
        assert_eq!(weights, [30, 20, 20, 10, 10, 5, 5]);
        assert_eq!(weights[..3].iter().sum::<u32>(), 70);
    }

    #[test]
    fn a_mix_names_known_operations_with_whole_weights() {
        assert_eq!(parse_mix("list-domain=1").unwrap().0, [1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            parse_mix(" set-vcpu = 2 , remove-domain=3,").unwrap().0,
            [0, 0, 0, 2, 0, 0, 3]
        );
        for bad in [
            "",
            "list-domain=0",
            "ls=1",
            "list-domain",
            "set-vcpu=-1",
            "set-vcpu=1.5",
        ] {
            assert!(parse_mix(bad).is_err(), "{bad}");
        }
        let Scenario::Mixed(args) = parse(&["mixed", "--mix", "list-bindings=1"]).unwrap() else {
            panic!("not mixed")
        };
        assert_eq!(args.mix.0, [0, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn draws_follow_the_weights() {
        let mix = parse_mix(MIX_DEFAULT).unwrap();
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 7];
        for _ in 0..100_000 {
            seen[mix.pick(rng.next())] += 1;
        }
        for (count, weight) in seen.iter().zip(mix.0) {
            let expected = f64::from(weight) * 1000.0;
            assert!(
                (f64::from(*count) - expected).abs() < expected * 0.05,
                "{seen:?}"
            );
        }
    }

    #[test]
    fn a_client_without_domains_adds_and_one_at_three_removes_the_oldest() {
        // Only adds drawn: the first three add, the fourth turns into removing the oldest.
        let mut plan = Plan::new(parse_mix("add-domain=1").unwrap(), 0);
        let mut done = Vec::new();
        for _ in 0..5 {
            let (operation, k) = plan.choose();
            plan.applied(operation, k, true);
            done.push((NAMES[operation], k));
        }
        assert_eq!(
            done,
            [
                ("add-domain", 0),
                ("add-domain", 1),
                ("add-domain", 2),
                ("remove-domain", 0),
                ("add-domain", 3)
            ]
        );
        // Only reads drawn: with no domain they become an add, then read the one held.
        let mut plan = Plan::new(parse_mix("list-bindings=1").unwrap(), 0);
        assert_eq!(plan.choose(), (ADD, 0));
        plan.applied(ADD, 0, true);
        assert_eq!(plan.choose(), (1, 0));
        // A failed add holds nothing and moves on to the next name; a failed remove keeps it.
        let mut plan = Plan::new(parse_mix("remove-domain=1").unwrap(), 0);
        plan.applied(ADD, 0, false);
        assert_eq!(plan.choose(), (ADD, 1));
        plan.applied(ADD, 1, true);
        assert_eq!(plan.choose(), (REMOVE, 1));
        plan.applied(REMOVE, 1, false);
        assert_eq!(plan.held, [1]);
    }

    #[test]
    fn mixed_runs_the_count_on_own_domains_and_leaves_none_behind() {
        let ldmd = Ldmd::start(Answers::Registry);
        let Scenario::Mixed(args) = scenario(&ldmd, "mixed", &["--clients", "4", "--count", "200"])
        else {
            panic!("not mixed")
        };
        let workload = Arc::new(Mixed {
            mix: args.mix.clone(),
        });
        let sources = args.connect.sources(4);
        let mut report =
            block_on(driver::run(workload, &args.connect, &args.drive, sources)).unwrap();
        report.judge();
        assert_eq!(report.exit_code(), 0, "{:?}", report.problems);
        let total = report.operations.last().unwrap();
        assert_eq!(
            (total.operation, total.count, total.errors),
            ("total", 200, 0)
        );
        let reads: u64 = report.operations[..3].iter().map(|r| r.count).sum();
        assert!(reads > 100, "read-mostly: {:?}", report.operations);
        assert!(
            report.operations.iter().all(|r| r.count > 0),
            "{:?}",
            report.operations
        );
        assert_eq!(ldmd.domains(), ["primary"]);
    }
}
