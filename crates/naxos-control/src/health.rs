//! The management role's decisions (pure): the failure detector (who has
//! answered a heartbeat lately), which node acts as the manager, and what the
//! acting manager changes next: take a failed node out, put a returning one
//! back (caught up first by the driver), give a spare the place of one that
//! stays away. Time comes in as a `Duration` since the runtime started, so
//! the unit tests and the simulator drive it by hand. The detector is only a
//! trigger: every change is a reconfiguration through the driver and the
//! layout Paxos, so a wrong suspicion or two managers acting at once cost a
//! reconfiguration or a retry, never data.

use crate::plan::Change;
use naxos_wire::Layout;
use std::collections::BTreeMap;
use std::time::Duration;

/// The management role's timings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often a node heartbeats every other (default 100 ms).
    pub heartbeat_interval: Duration,
    /// A node that has not answered for this long is suspected (default 1 s).
    pub failure_timeout: Duration,
    /// How long a chain stays short of replicas before a spare takes the
    /// missing place (default 10 s).
    pub spare_after: Duration,
    /// The first wait before a node taken out is put back (default 1 s); it
    /// doubles each time the node fails again soon after coming back.
    pub readd_delay_min: Duration,
    /// The longest such wait (default 60 s).
    pub readd_delay_max: Duration,
    /// A node back for this long is trusted again: its next failure starts
    /// from the shortest wait (default 60 s).
    pub stable_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            heartbeat_interval: Duration::from_millis(100),
            failure_timeout: Duration::from_secs(1),
            spare_after: Duration::from_secs(10),
            readd_delay_min: Duration::from_secs(1),
            readd_delay_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// What a heartbeat answer said about its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The node's id (a wiped data directory gets a new one).
    pub node_id: u64,
    /// The cluster it belongs to (empty: not bootstrapped).
    pub cluster_id: String,
    /// Whether it runs the management role (only those can act).
    pub management: bool,
    /// Whether it runs a log unit (only those can fill a chain).
    pub log_unit: bool,
    /// The nodes its own detector suspects (a manager takes a silent node
    /// out only if a majority of the managers it hears suspect it too).
    pub suspects: Vec<String>,
    /// Its log unit failed (it refuses every request until restarted).
    pub unit_failed: bool,
}

#[derive(Clone, Debug)]
struct Peer {
    /// When it was first watched.
    since: Duration,
    /// Its last answer, and when.
    last: Option<(Duration, Seen)>,
    /// When its current run of answers began (it has answered ever since).
    up_since: Option<Duration>,
    /// When it began answering as another cluster's node (or none), if it does.
    foreign_since: Option<(Duration, String)>,
}

/// The failure detector: who answered a heartbeat within the failure timeout.
#[derive(Clone, Debug, Default)]
pub struct Detector {
    timeout: Duration,
    peers: BTreeMap<String, Peer>,
}

impl Detector {
    /// A detector that suspects a node silent for `timeout`.
    pub fn new(timeout: Duration) -> Detector {
        Detector { timeout, peers: BTreeMap::new() }
    }

    /// Watches `addrs` from `now` on (nodes already watched keep their
    /// record); nodes not named are forgotten.
    pub fn watch(&mut self, addrs: &[String], now: Duration) {
        self.peers.retain(|a, _| addrs.contains(a));
        for a in addrs {
            self.peers.entry(a.clone()).or_insert(Peer { since: now, last: None, up_since: None, foreign_since: None });
        }
    }

    /// Records an answer of `addr` at `now`.
    pub fn heard(&mut self, addr: &str, now: Duration, seen: Seen) {
        let timeout = self.timeout;
        let Some(p) = self.peers.get_mut(addr) else { return };
        let was_up = p.last.as_ref().is_some_and(|(t, _)| now.saturating_sub(*t) < timeout);
        if !was_up {
            p.up_since = Some(now);
        }
        if p.foreign_since.as_ref().is_none_or(|(_, c)| *c != seen.cluster_id) {
            p.foreign_since = Some((now, seen.cluster_id.clone()));
        }
        p.last = Some((now, seen));
    }

    /// Forgets what `addr` last said about its cluster (it was just enrolled:
    /// answers from before are stale).
    pub fn enrolled(&mut self, addr: &str) {
        if let Some(p) = self.peers.get_mut(addr) {
            p.foreign_since = None;
        }
    }

    /// Whether `addr` has answered as a node of another cluster than
    /// `cluster` (or of none: not bootstrapped) for the whole failure timeout.
    pub fn foreign(&self, addr: &str, cluster: &str, now: Duration) -> bool {
        self.alive(addr, now)
            && self
                .peers
                .get(addr)
                .and_then(|p| p.foreign_since.as_ref())
                .is_some_and(|(t, c)| c != cluster && now.saturating_sub(*t) >= self.timeout)
    }

    /// Whether `addr` answered within the timeout.
    pub fn alive(&self, addr: &str, now: Duration) -> bool {
        self.peers.get(addr).and_then(|p| p.last.as_ref()).is_some_and(|(t, _)| now.saturating_sub(*t) < self.timeout)
    }

    /// Whether `addr` has been silent for the timeout (a node watched for
    /// less than that is given the benefit of the doubt).
    pub fn suspected(&self, addr: &str, now: Duration) -> bool {
        match self.peers.get(addr) {
            None => false,
            Some(p) => {
                let heard = p.last.as_ref().map_or(p.since, |(t, _)| *t);
                now.saturating_sub(heard) >= self.timeout
            }
        }
    }

    /// How long `addr` has been answering without a gap, if it is alive.
    pub fn up_for(&self, addr: &str, now: Duration) -> Option<Duration> {
        if !self.alive(addr, now) {
            return None;
        }
        self.peers.get(addr).and_then(|p| p.up_since).map(|t| now.saturating_sub(t))
    }

    /// What `addr` said last, if it ever answered.
    pub fn seen(&self, addr: &str) -> Option<&Seen> {
        self.peers.get(addr).and_then(|p| p.last.as_ref()).map(|(_, s)| s)
    }

    /// Every watched node it suspects, in address order.
    pub fn suspects(&self, now: Duration) -> Vec<String> {
        self.peers.keys().filter(|a| self.suspected(a, now)).cloned().collect()
    }
}

/// A change the acting manager makes, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// The change (one reconfiguration).
    pub change: Change,
    /// Why, for the log and the layout's history.
    pub reason: String,
}

/// Re-add damping of one node.
#[derive(Clone, Copy, Debug)]
struct Damp {
    /// The wait before it is put back after its last failure.
    delay: Duration,
    /// Not put back before this.
    not_before: Duration,
    /// When it was last put back.
    back_at: Option<Duration>,
}

/// The management role of one node: its detector and the acting manager's
/// decisions. The runtime heartbeats [`Manager::targets`], reports answers
/// with [`Manager::heard`], and, when [`Manager::decide`] returns an action,
/// runs it as one reconfiguration and reports the outcome with
/// [`Manager::finished`].
#[derive(Clone, Debug)]
pub struct Manager {
    me: String,
    settings: Settings,
    /// The heartbeat detector.
    pub detector: Detector,
    damp: BTreeMap<String, Damp>,
    /// Stripes of the active segment short of replicas, since when.
    short_since: BTreeMap<usize, Duration>,
    /// Spares that announced themselves, and when last.
    spares: BTreeMap<String, Duration>,
    /// No action before this (after a failed one).
    back_off_until: Duration,
    failures: u32,
    /// This node's own log unit failed: it does not act as the manager.
    pub unit_failed: bool,
    /// This node runs a log unit (out of every chain, it is a spare itself).
    pub log_unit: bool,
    /// Changes the layout refused, and until when not to try them again.
    refused: Vec<(Change, Duration)>,
    rng: u64,
}

impl Manager {
    /// The management role of the node at `me`; `seed` makes its back-off random.
    pub fn new(me: impl Into<String>, settings: Settings, seed: u64) -> Manager {
        Manager {
            me: me.into(),
            detector: Detector::new(settings.failure_timeout),
            settings,
            damp: BTreeMap::new(),
            short_since: BTreeMap::new(),
            spares: BTreeMap::new(),
            back_off_until: Duration::ZERO,
            failures: 0,
            unit_failed: false,
            log_unit: false,
            refused: Vec::new(),
            rng: seed | 1,
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Notes that the spare at `addr` announced itself at `now`.
    pub fn spare(&mut self, addr: &str, now: Duration) {
        if addr != self.me {
            self.spares.insert(addr.to_string(), now);
        }
    }

    /// Spares heard from within the failure timeout, in no chain of the
    /// active segment (a layout server or a sequencer can be a spare unit).
    pub fn spares(&self, layout: &Layout, now: Duration) -> Vec<String> {
        let members: Vec<String> = layout
            .segments
            .last()
            .map(|s| s.stripes.iter().flat_map(|st| st.chain.clone()).collect())
            .unwrap_or_default();
        self.spares
            .iter()
            .filter(|(a, t)| now.saturating_sub(**t) < self.settings.failure_timeout && !members.contains(a))
            // A node away comes back into its own chains, not as a spare.
            .filter(|(a, _)| !layout.away.iter().any(|w| w.addr == **a))
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// The nodes to heartbeat: every node of the layout, the nodes away and
    /// the spares (not itself). The detector watches exactly these.
    pub fn targets(&mut self, layout: &Layout, now: Duration) -> Vec<String> {
        let mut out = layout.all_nodes();
        for a in layout.away.iter().map(|a| a.addr.clone()).chain(self.spares(layout, now)) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out.retain(|a| *a != self.me);
        self.detector.watch(&out, now);
        out
    }

    /// Records a heartbeat answer.
    pub fn heard(&mut self, addr: &str, now: Duration, seen: Seen) {
        self.detector.heard(addr, now, seen);
    }

    /// Whether `addr` counts as failed: silent for the timeout, or answering
    /// for the timeout as another cluster's node or as a node that lost its
    /// data (not bootstrapped) while the layout still names it (not at once:
    /// a cluster being bootstrapped has such nodes for a moment).
    fn failed(&self, layout: &Layout, addr: &str, now: Duration) -> bool {
        if addr == self.me {
            return false;
        }
        self.detector.foreign(addr, &layout.cluster_id, now)
            || (self.detector.alive(addr, now) && self.detector.seen(addr).is_some_and(|s| s.unit_failed))
            || (self.detector.suspected(addr, now) && self.confirmed(addr, now))
    }

    /// Whether a majority of the managers this node hears (itself included,
    /// `addr` not) suspect `addr` as well: a node that only this one cannot
    /// reach (a bad link) is not taken out.
    fn confirmed(&self, addr: &str, now: Duration) -> bool {
        let mut voters = 1;
        let mut agree = 1;
        for (peer, p) in &self.detector.peers {
            if peer == addr || !self.detector.alive(peer, now) {
                continue;
            }
            let Some((_, seen)) = &p.last else { continue };
            if !seen.management {
                continue;
            }
            voters += 1;
            if seen.suspects.iter().any(|s| s == addr) {
                agree += 1;
            }
        }
        agree * 2 > voters
    }

    /// The layout server that acts as the manager as this node sees it: the
    /// first layout server (in the layout's order) that runs the management
    /// role and answers. `None` if it reaches no majority of layout servers
    /// (counting itself), as in a minority partition.
    pub fn acting(&self, layout: &Layout, now: Duration, i_manage: bool) -> Option<String> {
        let servers = &layout.layout_servers;
        let reach = servers.iter().filter(|a| **a == self.me || self.detector.alive(a, now)).count();
        if reach * 2 <= servers.len() {
            return None;
        }
        // A node taken out (away) does not manage until it is back.
        servers
            .iter()
            .filter(|a| !layout.away.iter().any(|w| w.addr == **a))
            .find(|a| {
                if **a == self.me {
                    i_manage && !self.unit_failed
                } else {
                    self.detector.alive(a, now) && self.detector.seen(a).is_some_and(|s| s.management && !s.unit_failed)
                }
            })
            .cloned()
    }

    fn refused_now(&self, change: &Change, now: Duration) -> bool {
        self.refused.iter().any(|(c, until)| c == change && now < *until)
    }

    /// What the acting manager changes next, if it is this node and
    /// anything needs changing: failed nodes first (the primary sequencer
    /// before log units), then nodes coming back, then spares.
    pub fn decide(&mut self, layout: &Layout, now: Duration) -> Option<Action> {
        self.track_short_chains(layout, now);
        if self.acting(layout, now, true).as_deref() != Some(self.me.as_str()) || now < self.back_off_until {
            return None;
        }
        let timeout = self.settings.failure_timeout;
        let why = |addr: &str, d: &Detector| match d.seen(addr) {
            Some(s) if d.alive(addr, now) && s.unit_failed => {
                format!("{addr}'s log unit failed (a disk error: it refuses every request until restarted)")
            }
            Some(s) if d.alive(addr, now) && s.cluster_id.is_empty() => {
                format!("{addr} answers without its data (not bootstrapped: wiped or replaced)")
            }
            Some(s) if d.alive(addr, now) => format!("{addr} answers as a node of cluster {}", s.cluster_id),
            _ => format!("{addr} suspected (no heartbeat answer for {} ms)", timeout.as_millis()),
        };
        // 1. Failed nodes still in a chain or in line as sequencers: out, all
        // in one change (a new chain must not name a dead replica: it could
        // not be sealed). The first sequencer left in line takes over.
        // Members: the active segment's units and the sequencers (a unit
        // left only in sealed segments waits there until it is back).
        let active: Vec<Vec<String>> =
            layout.segments.last().map(|s| s.stripes.iter().map(|st| st.chain.clone()).collect()).unwrap_or_default();
        let mut members: Vec<String> = Vec::new();
        for a in active.iter().flatten().chain(&layout.sequencers) {
            if !members.contains(a) {
                members.push(a.clone());
            }
        }
        let mut failed: Vec<String> = members.into_iter().filter(|a| self.failed(layout, a, now)).collect();
        // A chain's last replica stays, failed or not (the chain has nothing
        // else), so that it does not block taking the others out.
        for chain in &active {
            if chain.iter().all(|a| failed.contains(a)) {
                if let Some(keep) = chain.last() {
                    failed.retain(|a| a != keep);
                }
            }
        }
        if layout.sequencers.iter().all(|a| failed.contains(a)) {
            if let Some(keep) = layout.sequencers.first() {
                failed.retain(|a| a != keep);
            }
        }
        if !failed.is_empty() {
            let whys: Vec<String> = failed.iter().map(|a| why(a, &self.detector)).collect();
            let mut reason = format!("manager {}: {}", self.me, whys.join("; "));
            if layout.sequencers.first().is_some_and(|p| failed.contains(p)) {
                if let Some(next) = layout.sequencers.iter().find(|s| !failed.contains(s)) {
                    reason.push_str(&format!("; {next} takes over as the sequencer"));
                }
            }
            let a = Action { change: Change::TakeOut(failed), reason };
            if !self.refused_now(&a.change, now) {
                return Some(a);
            }
        }
        // 3. A node taken out answers again (for a while, and not damped): back in.
        for away in &layout.away {
            let addr = &away.addr;
            let settled = self.settings.heartbeat_interval * 3;
            if self.detector.up_for(addr, now).is_none_or(|d| d < settled) {
                continue;
            }
            let seen = self.detector.seen(addr);
            if seen.is_some_and(|s| !s.cluster_id.is_empty() && s.cluster_id != layout.cluster_id) {
                continue; // another cluster's node took the address
            }
            if seen.is_some_and(|s| s.unit_failed) {
                continue; // it answers, but its log unit refuses everything until restarted
            }
            if self.damp.get(addr).is_some_and(|d| now < d.not_before) {
                continue;
            }
            // A spare took its place meanwhile: it is let go.
            let chains = layout.segments.last().map(|s| s.stripes.as_slice()).unwrap_or_default();
            let full = !away.stripes.is_empty()
                && away.stripes.iter().all(|&i| {
                    chains
                        .get(i as usize)
                        .is_none_or(|st| st.chain.iter().filter(|a| *a != addr).count() >= layout.replication as usize)
                });
            // The chains it was in, or, if none is known, the first chain
            // short of replicas (a log unit can fill any).
            let short = layout.under_replicated().first().map(|(i, _)| *i);
            let stripes: Vec<u32> = if away.stripes.is_empty() && seen.is_some_and(|s| s.log_unit) {
                short.map(|i| vec![i as u32]).unwrap_or_default()
            } else {
                away.stripes.clone()
            };
            // Still a sequencer, or the last replica of a sealed chain: it
            // stays where the layout names it, and only leaves the away list.
            let named = layout.sequencers.contains(addr) || layout.log_units().contains(addr);
            let (change, what) = if full && named {
                (
                    Change::Restore(addr.clone()),
                    "its chains are full again (a spare took its place); it stays where the layout names it",
                )
            } else if full {
                (Change::Remove(addr.clone()), "its chains are full again (a spare took its place); it is let go")
            } else if stripes.is_empty() {
                (Change::Restore(addr.clone()), "it is a sequencer again")
            } else if stripes.len() == 1 {
                let s = stripes[0] as usize;
                (Change::Add { addr: addr.clone(), stripe: Some(s) }, "caught up and put back in its chain")
            } else {
                (Change::Add { addr: addr.clone(), stripe: None }, "caught up and put back in its chains")
            };
            let lost = if seen.is_some_and(|s| s.cluster_id.is_empty()) { " without its data (full copy)" } else { "" };
            let a = Action { change, reason: format!("manager {}: {addr} is back{lost}; {what}", self.me) };
            if !self.refused_now(&a.change, now) {
                return Some(a);
            }
        }
        // 4. A chain short of replicas for a while, and a spare answers: it takes the place.
        let mut spares = self.spares(layout, now);
        // This node, if it is a log unit in no chain (the operator removed
        // it, say), is a spare too: nobody else would put the acting manager back.
        let chained = layout.segments.last().is_some_and(|s| s.stripes.iter().any(|st| st.chain.contains(&self.me)));
        if self.log_unit && !self.unit_failed && !chained && !layout.away.iter().any(|a| a.addr == self.me) {
            spares.push(self.me.clone());
        }
        for (&stripe, &since) in &self.short_since {
            if now.saturating_sub(since) < self.settings.spare_after {
                continue;
            }
            let usable = |s: &&String| {
                **s == self.me
                    || (self.detector.alive(s, now) && !self.detector.seen(s).is_some_and(|seen| seen.unit_failed))
            };
            // A spare first; else a unit of another chain (a unit may serve
            // several stripes), so that every chain gets back to full.
            let chain = layout.segments.last().and_then(|s| s.stripes.get(stripe)).map(|st| st.chain.clone());
            let chain = chain.unwrap_or_default();
            let others: Vec<String> = layout
                .segments
                .last()
                .map(|s| s.stripes.iter().flat_map(|st| st.chain.clone()).collect())
                .unwrap_or_default();
            let is_unit = |a: &String| {
                if *a == self.me {
                    self.log_unit && !self.unit_failed
                } else {
                    self.detector.alive(a, now) && self.detector.seen(a).is_some_and(|s| s.log_unit && !s.unit_failed)
                }
            };
            let Some(spare) = spares
                .iter()
                .find(usable)
                .or_else(|| others.iter().filter(|a| !chain.contains(a)).find(|a| is_unit(a)))
                .cloned()
            else {
                continue;
            };
            let a = Action {
                change: Change::Add { addr: spare.clone(), stripe: Some(stripe) },
                reason: format!(
                    "manager {}: chain {stripe} short of replicas for {} s; spare {spare} takes the missing place",
                    self.me,
                    now.saturating_sub(since).as_secs()
                ),
            };
            if !self.refused_now(&a.change, now) {
                return Some(a);
            }
        }
        None
    }

    fn track_short_chains(&mut self, layout: &Layout, now: Duration) {
        let short: Vec<usize> = layout.under_replicated().into_iter().map(|(i, _)| i).collect();
        self.short_since.retain(|i, _| short.contains(i));
        for i in short {
            self.short_since.entry(i).or_insert(now);
        }
    }

    /// Records how `action` ended: `Ok(())`, refused by the layout (`Err(true)`:
    /// not tried again for a while), or failed (`Err(false)`: a random,
    /// growing back-off).
    pub fn finished(&mut self, action: &Action, outcome: Result<(), bool>, now: Duration) {
        match outcome {
            Ok(()) => {
                self.failures = 0;
                match &action.change {
                    Change::TakeOut(addrs) => {
                        for addr in addrs {
                            let min = self.settings.readd_delay_min;
                            let d = self.damp.entry(addr.clone()).or_insert(Damp {
                                delay: Duration::ZERO,
                                not_before: Duration::ZERO,
                                back_at: None,
                            });
                            // Failed again soon after it came back: wait twice as long.
                            let flapping =
                                d.back_at.is_some_and(|t| now.saturating_sub(t) < self.settings.stable_after);
                            d.delay =
                                if flapping { (d.delay * 2).clamp(min, self.settings.readd_delay_max) } else { min };
                            d.not_before = now + d.delay;
                        }
                    }
                    Change::Add { addr, .. } | Change::Restore(addr) => {
                        self.detector.enrolled(addr);
                        if let Some(d) = self.damp.get_mut(addr) {
                            d.back_at = Some(now);
                        }
                    }
                    _ => {}
                }
            }
            Err(true) => {
                self.refused.retain(|(_, until)| now < *until);
                self.refused.push((action.change.clone(), now + self.settings.failure_timeout * 10));
            }
            Err(false) => {
                self.failures = (self.failures + 1).min(6);
                let base = self.settings.heartbeat_interval * (1 << self.failures);
                self.back_off_until = now + base + self.jitter(base);
            }
        }
    }

    /// The wait before `addr` may be put back, if it is damped now.
    pub fn readd_delay(&self, addr: &str) -> Option<Duration> {
        self.damp.get(addr).map(|d| d.delay)
    }

    /// A random duration below `max` (xorshift).
    fn jitter(&mut self, max: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let n = max.as_nanos().max(1) as u64;
        Duration::from_nanos(self.rng % n)
    }
}

#[cfg(test)]
mod tests;
