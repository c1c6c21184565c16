//! Several ringways, one fleet: two `ringway` processes in front of the same backends,
//! their endpoints listed in different orders and with different shard counts, place
//! every conversation on the same backend with no shared state; when a backend dies,
//! both move only its conversations, and to the same place (README, "Running several
//! ringways").

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::process::Ringway;

const NAMES: [&str; 5] = ["gpu-0", "gpu-1", "gpu-2", "gpu-3", "gpu-4"];
/// The second replica's endpoint order (by index into `NAMES`): nothing like the first's.
const SHUFFLED: [usize; 5] = [3, 1, 4, 0, 2];
/// Health checks often enough that a dead backend is noticed within a fraction of a
/// second by each replica on its own, with no request needed.
const HEALTH: &str = "[health]\ncheck_interval_ms = 200\nunhealthy_threshold = 1\n";

/// Five mock backends and two ringway processes in front of them.
struct Fleet {
    mocks: Vec<Option<MockServer>>,
    replicas: [Ringway; 2],
    _configs: [TempFile; 2],
}

impl Fleet {
    fn start() -> Fleet {
        let mocks: Vec<MockServer> = NAMES.iter().map(|n| mock(n)).collect();
        let in_order: Vec<Ep<'_>> = NAMES
            .iter()
            .zip(&mocks)
            .map(|(n, m)| Ep::new(n, m))
            .collect();
        let shuffled: Vec<Ep<'_>> = SHUFFLED
            .iter()
            .map(|&i| Ep::new(NAMES[i], &mocks[i]))
            .collect();
        let configs = [
            TempFile::new(&config_text(&in_order, "shards = 1", HEALTH)),
            TempFile::new(&config_text(&shuffled, "shards = 2", HEALTH)),
        ];
        let spawn = |c: &TempFile| Ringway::spawn(&["--config", c.0.to_str().unwrap()], &[]);
        let replicas = [spawn(&configs[0]), spawn(&configs[1])];
        for r in &replicas {
            let settled = eventually(Duration::from_secs(5), || {
                status(r.addr)
                    .iter()
                    .all(|e| e["last_check_status"] == 200 && !e["model_count"].is_null())
            });
            assert!(settled, "{:?}", status(r.addr));
        }
        Fleet {
            mocks: mocks.into_iter().map(Some).collect(),
            replicas,
            _configs: configs,
        }
    }

    /// Stops backend `name` (listener and connections closed), then waits until both
    /// replicas list it as offline; returns how long that took.
    fn kill(&mut self, name: &str) -> Duration {
        let i = NAMES.iter().position(|n| *n == name).unwrap();
        let killed = Instant::now();
        self.mocks[i].take().expect("already stopped").stop();
        for r in &self.replicas {
            let noticed = eventually(Duration::from_secs(5), || {
                let eps = status(r.addr);
                let e = eps.iter().find(|e| e["name"] == name).unwrap();
                e["status"] == "offline"
            });
            assert!(noticed, "{name} still listed as up: {:?}", status(r.addr));
        }
        killed.elapsed()
    }
}

/// A replica's `/internal/status/endpoints` entries.
fn status(addr: SocketAddr) -> Vec<serde_json::Value> {
    let r = one_shot(
        addr,
        b"GET /internal/status/endpoints HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    r.json()["endpoints"].as_array().unwrap().clone()
}

/// Where a request was served, as the response says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placed {
    endpoint: String,
    sticky: String,
    group: Option<String>,
}

/// One chat request on a fresh connection (so a 2-shard replica's requests land on
/// either shard).
fn ask(addr: SocketAddr, body: &str) -> Placed {
    let r = one_shot(addr, post("/v1/chat/completions", body, "").as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let endpoint = r.header("X-Olla-Endpoint").unwrap().to_string();
    // The name in the replica's config is the backend that really answered: each replica
    // lists the same name for the same address.
    assert_eq!(r.header("X-Mock-Backend"), Some(endpoint.as_str()));
    Placed {
        endpoint,
        sticky: r.header("X-Olla-Sticky-Session").unwrap().to_string(),
        group: r.header("X-Ringway-Prefix-Group").map(str::to_string),
    }
}

/// Turn `turn` (1 or 2) of a conversation: its history grows, its sticky key (model,
/// system prompt, first user message) stays.
fn conversation(system: &str, first: &str, turn: usize) -> String {
    let mut messages = vec![
        serde_json::json!({"role": "system", "content": system}),
        serde_json::json!({"role": "user", "content": first}),
    ];
    if turn == 2 {
        messages.push(serde_json::json!({"role": "assistant", "content": "Here it is."}));
        messages.push(serde_json::json!({"role": "user", "content": "And once more?"}));
    }
    serde_json::json!({"model": "llama3.2:latest", "stream": false, "messages": messages})
        .to_string()
}

/// Sends turn `turn` of every conversation to both replicas; returns each
/// conversation's placement by the first, after checking the second agrees.
fn both(fleet: &Fleet, chats: &[(String, String)], turn: usize) -> Vec<Placed> {
    let mut disagree = Vec::new();
    let placed: Vec<Placed> = chats
        .iter()
        .enumerate()
        .map(|(c, (system, first))| {
            let body = conversation(system, first, turn);
            let one = ask(fleet.replicas[0].addr, &body);
            let other = ask(fleet.replicas[1].addr, &body);
            if (&one.endpoint, &one.group) != (&other.endpoint, &other.group) {
                disagree.push((c, one.clone(), other.clone()));
            }
            // Each replica remembers only the keys it has seen itself.
            assert_eq!(one.sticky, other.sticky, "conversation {c}");
            one
        })
        .collect();
    assert!(
        disagree.is_empty(),
        "turn {turn}: the replicas disagree on {} of {}: {disagree:?}",
        disagree.len(),
        chats.len()
    );
    placed
}

#[test]
fn two_replicas_place_100_conversations_alike_and_move_only_a_dead_backend_s() {
    let mut fleet = Fleet::start();
    // Distinct system prompts, all shorter than prefix_groups.min_prefix_bytes (1024):
    // no group forms, each conversation is placed by its own key over all five backends.
    let chats: Vec<(String, String)> = (0..100)
        .map(|c| {
            (
                format!("You are assistant {c}. Answer in one line."),
                format!("Conversation {c}: what is {c} squared?"),
            )
        })
        .collect();
    let before = both(&fleet, &chats, 1);
    assert!(
        before
            .iter()
            .all(|p| p.group.is_none() && p.sticky == "miss")
    );
    let mut load = BTreeMap::<&str, usize>::new();
    for p in &before {
        *load.entry(&p.endpoint).or_default() += 1;
    }
    assert_eq!(load.len(), 5, "100 keys over 5 backends: {load:?}");
    // The busiest backend dies.
    let victim = load
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(e, _)| *e)
        .unwrap();
    let victim = victim.to_string();
    let noticed = fleet.kill(&victim);
    assert!(noticed < Duration::from_secs(3), "{noticed:?}");

    let after = both(&fleet, &chats, 2);
    let mut moved = 0;
    for (c, (was, now)) in before.iter().zip(&after).enumerate() {
        if was.endpoint == victim {
            assert_ne!(now.endpoint, victim, "conversation {c}");
            assert_eq!(now.sticky, "repin", "conversation {c}");
            moved += 1;
        } else {
            assert_eq!(now.endpoint, was.endpoint, "conversation {c} moved");
            assert_eq!(now.sticky, "hit", "conversation {c}");
        }
    }
    assert_eq!(moved, load[victim.as_str()]);
    // The moved ones spread over the survivors rather than piling onto one.
    let landed: BTreeSet<&str> = before
        .iter()
        .zip(&after)
        .filter(|(was, _)| was.endpoint == victim)
        .map(|(_, now)| now.endpoint.as_str())
        .collect();
    assert!(landed.len() >= 2 || moved < 4, "{landed:?}");
}

#[test]
fn two_replicas_agree_on_prefix_groups_and_a_dead_member_moves_only_its_groups() {
    let mut fleet = Fleet::start();
    // Six tenants, each with a 2 KB system prompt (a group of 2 of the 5 backends), six
    // users each.
    let tenants = 6;
    let chats: Vec<(String, String)> = (0..tenants)
        .flat_map(|t| {
            let system = format!("Tenant {t}. ") + &"Answer from the product manual. ".repeat(70);
            (0..6).map(move |u| (system.clone(), format!("User {u} of tenant {t} asks.")))
        })
        .collect();
    let before = both(&fleet, &chats, 1);
    assert!(
        before
            .iter()
            .all(|p| p.group.as_ref().is_some_and(|g| g.ends_with("; size=2")))
    );
    // Each tenant's group, as the first replica's stats page names its members.
    let groups = group_members(fleet.replicas[0].addr);
    assert_eq!(groups, group_members(fleet.replicas[1].addr));
    assert_eq!(groups.len(), tenants);
    let members_of = |p: &Placed| {
        let key = p.group.as_ref().unwrap().split(';').next().unwrap();
        groups[key].clone()
    };
    for p in &before {
        assert!(members_of(p).contains(&p.endpoint), "{p:?} {groups:?}");
    }
    // A member of the first tenant's group dies; some groups hold it, some do not.
    let victim = members_of(&before[0]).into_iter().next().unwrap();
    let holding = groups.values().filter(|m| m.contains(&victim)).count();
    assert!(0 < holding && holding < tenants, "{groups:?}");
    fleet.kill(&victim);

    let after = both(&fleet, &chats, 2);
    for (c, (was, now)) in before.iter().zip(&after).enumerate() {
        assert_ne!(now.endpoint, victim);
        // A group without the dead backend is unchanged, and so are its conversations;
        // a group that held it takes the next backend of its ranking instead, and its
        // conversations are placed again over the new pair.
        if !members_of(was).contains(&victim) {
            assert_eq!(now.endpoint, was.endpoint, "conversation {c} moved");
            assert_eq!(now.sticky, "hit");
        }
    }
}

/// `/internal/stats/sticky`'s prefix groups: key → members (names, sorted).
fn group_members(addr: SocketAddr) -> BTreeMap<String, BTreeSet<String>> {
    let page = one_shot(
        addr,
        b"GET /internal/stats/sticky HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .json();
    let groups = page["prefix_groups"]["groups"].as_array().unwrap();
    groups
        .iter()
        .map(|g| {
            let members = g["members"].as_array().unwrap().iter();
            let members = members.map(|m| m.as_str().unwrap().to_string()).collect();
            (g["key"].as_str().unwrap().to_string(), members)
        })
        .collect()
}
