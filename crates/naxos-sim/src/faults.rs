//! The fault schedule: crashes (unsynced data lost) and restarts of servers,
//! whole-cluster power loss, partitions both ways and one way, held (delayed)
//! links, flaky links that lose messages, changing message latency
//! (reordering across connections), and reconfigurations in the middle of
//! traffic, each run by a driver host through `naxos_control::reconfigure`
//! (the next epoch, removing a log unit and adding it back later, moving the
//! primary sequencer, a new segment over the servers in another order), two
//! of which may race; each chosen by the run's seeded RNG and undone after a
//! seeded while; and bit rot: a byte of a synced record flips on a crashed
//! server's disk before it starts again (at most once a run).
//! `heal` undoes everything for the quiescent phase.

use crate::rng::Rng;
use crate::rot::Rot;
use std::sync::Arc;
use std::time::Duration;

/// Something to undo later.
#[derive(Clone, Debug)]
enum Undo {
    Bounce(Vec<String>),
    Repair(String, String),
    RepairOneway(String, String),
    Release(String, String),
    Steady(String, String),
    /// Add a removed log unit back.
    Readd(String),
    /// Crash this server now (the acting manager, in the middle of the
    /// reconfiguration its detector started), and restart it later.
    Crash(String),
    /// End the isolation of a paused server (partitioned from every host).
    Resume(String, Vec<String>),
}

/// The seeded fault schedule of one run.
pub struct Faults {
    rng: Rng,
    servers: Vec<String>,
    clients: Vec<String>,
    next_at: Duration,
    pending: Vec<(Duration, Undo)>,
    down: Vec<String>,
    seals: u32,
    addrs: Vec<String>,
    /// Run one scripted membership churn instead of random reconfigurations.
    churn: bool,
    /// Set once the quiescent phase begins: drivers started then must get done
    /// (the settle check finds a unit they did not put back).
    healing: bool,
    /// Hosts not in the schedule that are restarted with the others when
    /// the faults end (the spare).
    pub extra: Vec<String>,
    /// Units the operator removed and meant to put back (their re-add may
    /// have died or given up under faults): put back when the faults end.
    readd: Vec<String>,
    /// What happened, with the simulated time: part of the run's trace.
    pub log: Vec<String>,
    /// Bit rot, applied by a server's host when it starts again.
    rot: Arc<Rot>,
    /// Its own stream of draws, so that the rest of the schedule of a
    /// seed is what it was before rot existed.
    rot_rng: Rng,
    /// When the last reconfiguration driver started (it may retry for a
    /// while): no rot soon after one.
    last_drive: Option<Duration>,
}

impl Faults {
    /// A schedule over these hosts.
    pub fn new(
        seed: u64,
        servers: Vec<String>,
        clients: Vec<String>,
        addrs: Vec<String>,
        churn: bool,
        rot: Arc<Rot>,
    ) -> Faults {
        Faults {
            rot,
            rot_rng: Rng::new(seed, 13),
            last_drive: None,
            rng: Rng::new(seed, 7),
            servers,
            clients,
            next_at: Duration::from_millis(100),
            pending: Vec::new(),
            down: Vec::new(),
            seals: 0,
            addrs,
            churn,
            healing: false,
            readd: Vec::new(),
            extra: Vec::new(),
            log: Vec::new(),
        }
    }

    fn pick<'a>(&mut self, v: &'a [String]) -> &'a String {
        &v[self.rng.range(0, v.len() as u64) as usize]
    }

    /// A link from a server to any other host (server or client); `None` if
    /// the pick named one host twice.
    fn pick_link(&mut self) -> Option<(String, String)> {
        let a = self.pick(&self.servers.clone()).clone();
        let mut all = self.servers.clone();
        all.extend(self.clients.iter().cloned());
        let b = self.pick(&all).clone();
        (a != b).then_some((a, b))
    }

    fn note(&mut self, now: Duration, what: String) {
        self.log.push(format!("{:>10.3}ms fault: {what}", now.as_secs_f64() * 1e3));
    }

    /// Called after every step: undoes what is due, maybe injects a new fault.
    pub fn step(&mut self, sim: &mut turmoil::Sim<'_>) {
        let now = sim.elapsed();
        let due: Vec<Undo> = {
            let (due, keep): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(t, _)| *t <= now);
            self.pending = keep;
            due.into_iter().map(|(_, u)| u).collect()
        };
        for u in due {
            self.undo(sim, u, now);
        }
        if self.rot.take_fresh() {
            self.next_at = self.next_at.max(now + crate::rot::REPAIR_GRACE);
            self.note(
                now,
                format!("rot applied: no new fault for {:?}, the node's time to repair it", crate::rot::REPAIR_GRACE),
            );
        }
        if now < self.next_at {
            return;
        }
        self.next_at = now + Duration::from_millis(self.rng.range(50, 400));
        let servers = self.servers.clone();
        let roll = self.rng.range(0, 100);
        let later = |rng: &mut Rng, lo: u64, hi: u64| now + Duration::from_millis(rng.range(lo, hi));
        match roll {
            0..=19 if self.down.is_empty() => {
                let s = self.pick(&servers).clone();
                sim.crash(s.as_str());
                self.note(now, format!("crash {s}"));
                self.down.push(s.clone());
                // Mostly short; one in five stays away past the failure
                // timeout and the spare delay (the managers take it out, a
                // spare may take its place).
                let at = if self.rng.chance(0.2) {
                    later(&mut self.rng, 2500, 5000)
                } else {
                    later(&mut self.rng, 100, 1500)
                };
                self.pending.push((at, Undo::Bounce(vec![s.clone()])));
                // Sometimes the acting manager (the first layout server,
                // unless it is the one down) dies in the middle of taking
                // the failed one out.
                if self.rng.chance(0.25) {
                    let manager = if s == servers[0] { servers[1].clone() } else { servers[0].clone() };
                    let at = later(&mut self.rng, 1000, 1300);
                    self.pending.push((at, Undo::Crash(manager)));
                }
                // Sometimes a synced byte flips on its disk while it is down
                // (not with the churn script, which leaves a unit alone
                // with the log on purpose). Only when this crash is the one
                // fault in progress (and no reconfiguration driver started
                // in the last 10 s), and no new one starts until the repair
                // grace after its restart: rot while every other replica is
                // lost too is a real loss. Tried again at a later crash if
                // no record qualified (see `rot`).
                let driving = self.last_drive.is_some_and(|t| now < t + Duration::from_secs(10));
                if !self.churn && !driving && self.pending.len() == 1 && self.rot.wanted() && self.rot_rng.chance(0.3) {
                    self.rot.schedule(&s, self.rot_rng.next_u64());
                    self.next_at = self.next_at.max(at + crate::rot::REPAIR_GRACE);
                    self.note(now, format!("rot {s}: a byte of a synced record flips on its disk while it is down"));
                }
            }
            20..=23 if self.down.is_empty() => {
                for s in &servers {
                    sim.crash(s.as_str());
                }
                self.note(now, "power loss: crash every server".into());
                self.down = servers.clone();
                let at = later(&mut self.rng, 100, 600);
                self.pending.push((at, Undo::Bounce(servers.clone())));
            }
            24..=43 => {
                let Some((a, b)) = self.pick_link() else { return };
                let at = later(&mut self.rng, 50, 1500);
                if self.rng.chance(0.5) {
                    sim.partition(a.as_str(), b.as_str());
                    self.note(now, format!("partition {a} <-> {b}"));
                    self.pending.push((at, Undo::Repair(a, b)));
                } else {
                    sim.partition_oneway(a.as_str(), b.as_str());
                    self.note(now, format!("partition {a} -> {b}"));
                    self.pending.push((at, Undo::RepairOneway(a, b)));
                }
            }
            44..=58 => {
                let a = self.pick(&servers).clone();
                let b = self.pick(&self.clients.clone()).clone();
                sim.hold(a.as_str(), b.as_str());
                self.note(now, format!("hold {a} <-> {b}"));
                let at = later(&mut self.rng, 10, 300);
                self.pending.push((at, Undo::Release(a, b)));
            }
            59..=68 => {
                let ms = self.rng.range(1, 40);
                sim.set_max_message_latency(Duration::from_millis(ms));
                self.note(now, format!("max message latency {ms}ms"));
            }
            69..=72 if self.churn && self.seals == 0 => {
                // One unit leaves, misses appends, comes back (state transfer),
                // and then holds the log alone: whatever the copy left out is
                // gone, and the final read-back finds it.
                let mut order = self.addrs.clone();
                let by = self.rng.range(0, order.len() as u64) as usize;
                order.rotate_left(by);
                let x = order[0].clone();
                let mut script = vec![
                    naxos_control::Change::Remove(x.clone()),
                    naxos_control::Change::Add { addr: x.clone(), stripe: None },
                    naxos_control::Change::Sequencer(x),
                ];
                script.extend(order[1..].iter().map(|a| naxos_control::Change::Remove(a.clone())));
                self.seals += 1;
                self.note(
                    now,
                    format!(
                        "reconfigure: churn1: {}",
                        script.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("; ")
                    ),
                );
                let seed = self.rng.range(1, u64::MAX);
                sim.client("churn1", reconfigure_all(self.addrs.clone(), script, seed));
            }
            69..=72 if !self.churn && self.seals < 5 => {
                let change = match self.rng.range(0, 4) {
                    0 => naxos_control::Change::NextEpoch,
                    1 => {
                        let victim = self.pick(&self.addrs.clone()).clone();
                        let at = later(&mut self.rng, 200, 1500);
                        self.pending.push((at, Undo::Readd(victim.clone())));
                        if !self.readd.contains(&victim) {
                            self.readd.push(victim.clone());
                        }
                        naxos_control::Change::Remove(victim)
                    }
                    2 => naxos_control::Change::Sequencer(self.pick(&self.addrs.clone()).clone()),
                    _ => {
                        let mut units = self.addrs.clone();
                        let by = self.rng.range(0, units.len() as u64) as usize;
                        units.rotate_left(by);
                        if units.len() > 2 && self.rng.chance(0.5) {
                            // Two stripes of two over three servers: one unit serves both.
                            let shared = units[0].clone();
                            units.truncate(3);
                            units.push(shared);
                            naxos_control::Change::Segment { log_units: units, replication: 2, stripes: 2 }
                        } else {
                            let replication = units.len();
                            naxos_control::Change::Segment { log_units: units, replication, stripes: 1 }
                        }
                    }
                };
                self.drive(sim, now, change);
            }
            79..=82 => {
                // A pause longer than the failure timeout (a stopped process,
                // a long stall): the server is cut off from every host, and
                // wakes up fenced when it is let back.
                let s = self.pick(&servers).clone();
                let others: Vec<String> = servers.iter().chain(&self.clients).filter(|h| **h != s).cloned().collect();
                for o in &others {
                    sim.partition(s.as_str(), o.as_str());
                }
                self.note(now, format!("pause {s} (cut off from every host)"));
                let at = later(&mut self.rng, 1200, 3000);
                self.pending.push((at, Undo::Resume(s, others)));
            }
            73..=78 => {
                // A flaky link: it drops messages (and so breaks connections) at random.
                let Some((a, b)) = self.pick_link() else { return };
                sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.05);
                self.note(now, format!("flaky link {a} <-> {b} (message loss)"));
                let at = later(&mut self.rng, 50, 800);
                self.pending.push((at, Undo::Steady(a, b)));
            }
            _ => {}
        }
    }

    /// Starts a driver host that makes `change`; one in five dies after the
    /// seal or after the layout is chosen (before telling anyone).
    fn drive(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, change: naxos_control::Change) {
        use naxos_control::reconfig::Abandon;
        self.seals += 1;
        self.last_drive = Some(now);
        let name = format!("driver{}", self.seals);
        let abandon = match self.rng.range(0, 10) {
            _ if self.healing => None,
            0 => Some(Abandon::AfterSeal),
            1 => Some(Abandon::AfterChoose),
            _ => None,
        };
        let dies = abandon.map_or(String::new(), |a| format!(" (dies {a:?})"));
        // The operator who puts a unit back sees the command die and runs it again.
        if let (Some(_), naxos_control::Change::Add { addr, .. }) = (abandon, &change) {
            let at = now + Duration::from_millis(self.rng.range(200, 1500));
            self.pending.push((at, Undo::Readd(addr.clone())));
        }
        let must = if self.healing { " (after the faults: the settle check wants it done)" } else { "" };
        self.note(now, format!("reconfigure: {name}: {change}{dies}{must}"));
        let seed = seed_of(&name, &change, self.rng.range(0, u64::MAX));
        sim.client(name.as_str(), reconfigure_with(self.addrs.clone(), change, abandon, self.healing, seed));
    }

    fn undo(&mut self, sim: &mut turmoil::Sim<'_>, u: Undo, now: Duration) {
        match u {
            Undo::Bounce(hosts) => {
                for h in &hosts {
                    sim.bounce(h.as_str());
                    self.down.retain(|d| d != h);
                }
                self.note(now, format!("restart {}", hosts.join(",")));
            }
            Undo::Repair(a, b) => {
                sim.repair(a.as_str(), b.as_str());
                self.note(now, format!("repair {a} <-> {b}"));
            }
            Undo::RepairOneway(a, b) => {
                sim.repair_oneway(a.as_str(), b.as_str());
                self.note(now, format!("repair {a} -> {b}"));
            }
            Undo::Steady(a, b) => {
                sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0);
                sim.repair(a.as_str(), b.as_str());
                self.note(now, format!("steady link {a} <-> {b}"));
            }
            Undo::Crash(host) => {
                if self.healing || self.down.contains(&host) {
                    return;
                }
                sim.crash(host.as_str());
                self.note(now, format!("crash {host} (the acting manager, during its reconfiguration)"));
                self.down.push(host.clone());
                let at = now + Duration::from_millis(self.rng.range(300, 1500));
                self.pending.push((at, Undo::Bounce(vec![host])));
            }
            Undo::Resume(host, others) => {
                for o in &others {
                    sim.repair(host.as_str(), o.as_str());
                }
                self.note(now, format!("resume {host}"));
            }
            Undo::Readd(addr) => {
                self.drive(sim, now, naxos_control::Change::Add { addr, stripe: None });
            }
            Undo::Release(a, b) => {
                sim.release(a.as_str(), b.as_str());
                self.note(now, format!("release {a} <-> {b}"));
            }
        }
    }

    /// Undoes every fault, then crashes and restarts every server (unsynced
    /// data lost), for the quiescent phase.
    pub fn heal(&mut self, sim: &mut turmoil::Sim<'_>) {
        let now = sim.elapsed();
        self.healing = true;
        for (_, u) in std::mem::take(&mut self.pending) {
            if !matches!(u, Undo::Readd(_)) {
                self.undo(sim, u, now);
            }
        }
        // The operator makes sure every unit they removed is back (a unit
        // already back is refused, quietly); the settle check wants them back.
        for addr in std::mem::take(&mut self.readd) {
            self.drive(sim, now, naxos_control::Change::Add { addr, stripe: None });
        }
        sim.set_max_message_latency(Duration::from_millis(2));
        for s in self.servers.iter().chain(&self.extra) {
            sim.crash(s.as_str());
            sim.bounce(s.as_str());
        }
        self.down.clear();
        self.note(now, "heal: links repaired, every server crashed and restarted".into());
    }
}

/// A driver host that runs `script` in order, each change after the last
/// one completed (pausing between them so that appends go on).
async fn reconfigure_all(addrs: Vec<String>, script: Vec<naxos_control::Change>, seed: u64) -> turmoil::Result {
    for (k, change) in script.into_iter().enumerate() {
        reconfigure(addrs.clone(), change, seed.wrapping_add(k as u64)).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// A driver host: runs one reconfiguration, retrying while nodes are down
/// or other drivers win; a change the layout refuses (removing the last
/// replica of a chain, adding a unit that is there) ends it quietly.
async fn reconfigure(addrs: Vec<String>, change: naxos_control::Change, seed: u64) -> turmoil::Result {
    reconfigure_with(addrs, change, None, false, seed).await
}

/// A seed for a driver's random choices that replays with the run and is
/// its own: from the host's name (each driver host has one), its change and
/// a draw of the run's generator. Two drivers must never share rank ids.
fn seed_of(name: &str, change: &naxos_control::Change, draw: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = FixedHasher(0xcbf2_9ce4_8422_2325);
    name.hash(&mut h);
    change.to_string().hash(&mut h);
    draw.hash(&mut h);
    h.finish()
}

/// FNV-1a: a hasher with no random state.
struct FixedHasher(u64);

impl std::hash::Hasher for FixedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// A driver host as above that dies (stops) at `abandon`; the cluster must
/// finish the reconfiguration by itself. Under faults a driver may give up
/// (a unit it adds may have failed for good until restarted); once the
/// faults are over (`must_complete`), a unit it could not put back leaves
/// the cluster short, which the settle check reports (`healing`).
async fn reconfigure_with(
    addrs: Vec<String>,
    change: naxos_control::Change,
    abandon: Option<naxos_control::reconfig::Abandon>,
    must_complete: bool,
    seed: u64,
) -> turmoil::Result {
    let net: std::sync::Arc<dyn naxos_wire::net::Net> = std::sync::Arc::new(crate::net::TurmoilNet);
    let options = naxos_control::Options {
        timeout_call: Duration::from_millis(500),
        attempts: 8,
        transfer_bytes_per_s_max: 0,
        abandon,
        seed,
        reason: String::new(),
        clock: || 0,
        progress: None,
        skip: Vec::new(),
    };
    if abandon.is_some() {
        let _ = naxos_control::reconfigure(net, &addrs, &change, &options).await;
        return Ok(());
    }
    let mut last = String::new();
    for _ in 0..40 {
        match naxos_control::reconfigure(net.clone(), &addrs, &change, &options).await {
            Ok(_) | Err(naxos_control::reconfig::Error::Refused(_)) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !must_complete {
        tracing::info!("driver gave up on {change} under faults: {last}");
        return Ok(());
    }
    // After the faults the unit must come back: the settle check reports a
    // cluster that is not whole as a violation of `healing` (a broken
    // simulation would hide it from the mutation tests).
    tracing::warn!("the driver never completed {change} after the faults stopped: {last}");
    Ok(())
}
