//! The membership state machine of one member.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::index;
use rand::Rng;

use crate::config::Config;
use crate::detector::{window_of, Liveness, Verdict};
use crate::error::GossipError;
use crate::event::{Event, Refusal};
use crate::member::{
    Lifecycle, LocalMember, MemberId, MemberInfo, Role, Status, MAX_ADDRESS_LEN, MAX_ID_LEN,
    MAX_ZONE_LEN,
};
use crate::message::{
    check_len, header_len, Ack, Ack2, Body, Digest, Message, Record, Syn, PROTOCOL_VERSION,
};

/// A message to send, addressed by the recipient's gossip address.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Recipient address, as given in its record, in the seed list, or as the
    /// `from` of the message being answered.
    pub to: String,
    /// The message.
    pub message: Message,
}

/// A member's failure detector reading; see [`Membership::health`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    /// Phi-accrual suspicion: about 1 means "one interval late", 8 "down"
    /// by the default threshold.
    pub phi: f64,
    /// Time since its heartbeat last rose here.
    pub silence: Duration,
}

/// One member's entry in the local list.
#[derive(Debug, Clone)]
struct Entry {
    record: Record,
    liveness: Liveness,
    /// Local time at which the detector declared it down.
    down_since: Option<Duration>,
    /// Local time at which this member learned that it left.
    left_at: Option<Duration>,
    /// Local time at which its version last rose here: the start of the time a
    /// heartbeat bound grows with.
    heard_at: Duration,
    /// Local time of the last incarnation rise accepted here (none for the
    /// first version heard), so that rises are at most one per interval.
    risen_at: Option<Duration>,
}

/// Acks of ours that asked a peer for records, awaiting its Ack2.
#[derive(Debug, Clone)]
struct PendingAck {
    /// Members asked for.
    requested: BTreeSet<MemberId>,
    /// When the last such Ack went out.
    sent_at: Duration,
}

/// The last version of a forgotten member, refused until `until`.
#[derive(Debug, Clone, Copy)]
struct Quarantined {
    version: (u64, u64),
    until: Duration,
}

/// Membership list and failure detector of one member, driven by the caller.
///
/// Sans-IO: [`tick`](Self::tick) and [`receive`](Self::receive) return the
/// messages to send; the caller owns sockets and the clock. Time is a
/// [`Duration`] since an arbitrary origin chosen by the caller (process start, a
/// simulation's round zero); it must not go backwards, and a smaller `now` than
/// one already seen is treated as that earlier instant. Randomness (peer choice,
/// digest windows) comes only from the injected `R`, so a seed replays a run.
#[derive(Debug, Clone)]
pub struct Membership<R = StdRng> {
    config: Config,
    local_id: MemberId,
    /// Everyone known, the local member included, sorted by id so that digests
    /// come out sorted and can be merged in one pass.
    members: BTreeMap<MemberId, Entry>,
    quarantine: BTreeMap<MemberId, Quarantined>,
    seeds: Vec<String>,
    rng: R,
    now: Duration,
    events: VecDeque<Event>,
    dropped_events: u64,
    leave_acks: BTreeSet<MemberId>,
    /// Acks that asked for records, by the id of the peer they went to, until
    /// `pending_ack_ttl` after the last one.
    pending_acks: BTreeMap<MemberId, PendingAck>,
    /// Records and digest entries refused so far.
    refusals: u64,
    /// `(sender, reason)` pairs already reported, at most `max_members`.
    reported: BTreeSet<(MemberId, Refusal)>,
    /// Moves on every call that can change what the readers return (see
    /// [`Membership::changes`]).
    changes: u64,
}

impl<R: Rng> Membership<R> {
    /// Starts a member that knows only itself and the seed addresses it will
    /// contact until it hears of others. Seeds equal to the local address are
    /// ignored, so every member can be given the same seed list.
    pub fn new(
        config: Config,
        local: LocalMember,
        seeds: Vec<String>,
        rng: R,
        now: Duration,
    ) -> Result<Self, GossipError> {
        config.validate()?;
        check_len("id", local.id.as_str(), MAX_ID_LEN)?;
        check_len("address", &local.address, MAX_ADDRESS_LEN)?;
        check_len("zone", &local.zone, MAX_ZONE_LEN)?;
        for seed in &seeds {
            check_len("address", seed, MAX_ADDRESS_LEN)?;
        }
        let mut seeds: Vec<String> = seeds.into_iter().filter(|s| *s != local.address).collect();
        seeds.sort();
        seeds.dedup();
        let record = Record {
            id: local.id.clone(),
            address: local.address,
            role: local.role,
            weight: local.weight,
            zone: local.zone,
            lifecycle: Lifecycle::Active,
            incarnation: local.incarnation,
            meta_version: 0,
            heartbeat: 0,
        };
        let mut members = BTreeMap::new();
        members.insert(
            local.id.clone(),
            Entry {
                record,
                liveness: Liveness::new(now),
                down_since: None,
                left_at: None,
                heard_at: now,
                risen_at: None,
            },
        );
        Ok(Self {
            config,
            local_id: local.id,
            members,
            quarantine: BTreeMap::new(),
            seeds,
            rng,
            now,
            events: VecDeque::new(),
            dropped_events: 0,
            leave_acks: BTreeSet::new(),
            pending_acks: BTreeMap::new(),
            refusals: 0,
            reported: BTreeSet::new(),
            changes: 0,
        })
    }

    /// One gossip round: bumps the local heartbeat, runs the failure detector,
    /// forgets expired members, and returns a [`Syn`] for each chosen peer: up to
    /// `fanout` live members, a seed now and then (every round while no one is
    /// known), and now and then a down member so that partitions heal.
    pub fn tick(&mut self, now: Duration) -> Vec<Outgoing> {
        self.changed();
        self.advance(now);
        self.bump_local(false);
        self.sweep();
        self.expire_pending_acks();
        let targets = self.choose_targets();
        if targets.is_empty() {
            return Vec::new();
        }
        let message = self.build_syn();
        targets
            .into_iter()
            .map(|to| Outgoing {
                to,
                message: message.clone(),
            })
            .collect()
    }

    /// Merges a message received from `from` (the address replies should go
    /// to; over a request/response transport, send the replies back on the same
    /// exchange) and returns the replies. A malformed message is an error and
    /// changes nothing; records refused as implausible (see the crate docs) are
    /// skipped, counted and reported as [`Event::Refused`], not errors.
    pub fn receive(
        &mut self,
        from: &str,
        message: Message,
        now: Duration,
    ) -> Result<Vec<Outgoing>, GossipError> {
        message.validate(self.config.max_message_bytes)?;
        self.changed();
        self.advance(now);
        if message.from == self.local_id {
            // Our own message looped back (a seed list naming us under another
            // address): nothing in it is news.
            return Ok(Vec::new());
        }
        let reply = match message.body {
            Body::Syn(syn) => self.handle_syn(&message.from, &syn).map(Body::Ack),
            Body::Ack(ack) => self.handle_ack(&message.from, ack).map(Body::Ack2),
            Body::Ack2(ack2) => {
                self.handle_ack2(&message.from, ack2.records);
                None
            }
        };
        Ok(reply
            .map(|body| Outgoing {
                to: from.to_owned(),
                message: self.message(body),
            })
            .into_iter()
            .collect())
    }

    /// Takes the events observed since the last call, oldest first.
    pub fn drain_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Events dropped because more than `max_pending_events` were pending.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Records and digest entries refused so far, reported or not (see
    /// [`Event::Refused`]).
    pub fn refusals(&self) -> u64 {
        self.refusals
    }

    /// Announces a decommission: the member keeps serving while it hands its
    /// ranges away, and shows as `leaving`. No effect once it has left.
    pub fn start_leaving(&mut self) {
        self.changed();
        if self.local_record().lifecycle == Lifecycle::Active {
            self.local_record_mut().lifecycle = Lifecycle::Leaving;
            self.bump_local(true);
        }
    }

    /// Announces that the member leaves. Keep calling [`tick`](Self::tick) for
    /// a few rounds so the news spreads, for example until
    /// [`leave_acknowledged_by`](Self::leave_acknowledged_by) reaches the
    /// fan-out. Final for this incarnation.
    pub fn leave(&mut self) {
        self.changed();
        if self.local_record().lifecycle != Lifecycle::Left {
            self.local_record_mut().lifecycle = Lifecycle::Left;
            self.bump_local(true);
            self.leave_acks.clear();
        }
    }

    /// How many peers have confirmed holding the local member's `left` record.
    pub fn leave_acknowledged_by(&self) -> usize {
        self.leave_acks.len()
    }

    /// Changes the local weight (capacity) and spreads it.
    pub fn set_weight(&mut self, weight: u32) {
        self.changed();
        if self.local_record().weight != weight {
            self.local_record_mut().weight = weight;
            self.bump_local(true);
        }
    }

    /// Changes the local address and spreads it.
    pub fn set_address(&mut self, address: String) -> Result<(), GossipError> {
        check_len("address", &address, MAX_ADDRESS_LEN)?;
        self.changed();
        if self.local_record().address != address {
            self.local_record_mut().address = address;
            self.bump_local(true);
        }
        Ok(())
    }

    /// A counter that differs whenever anything the readers return
    /// ([`members`](Self::members), [`status`](Self::status),
    /// [`ring_members`](Self::ring_members), ...) may have changed since it was
    /// last read: every call that merges, ticks or edits the local record moves
    /// it. A caller that derives something costly per request (a gateway's
    /// ring and liveness snapshot) keeps its result until this moves, and is
    /// then exactly as fresh as one that re-derived it every time. It moves
    /// more often than the state really changes (each tick advances the
    /// clock the failure detector reads), never less.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    fn changed(&mut self) {
        self.changes = self.changes.wrapping_add(1);
    }

    /// The local member's id.
    pub fn local_id(&self) -> &MemberId {
        &self.local_id
    }

    /// The local member as others should see it. Its `incarnation` can exceed
    /// the one given at construction if the cluster held a newer record of this
    /// id (see the crate docs); persist it.
    pub fn local(&self) -> MemberInfo {
        self.info(self.local_entry())
    }

    /// The latest `now` seen.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Every known member, the local one and `left` tombstones included, sorted
    /// by id.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.members.values().map(|e| self.info(e)).collect()
    }

    /// One member, if known.
    pub fn member(&self, id: &str) -> Option<MemberInfo> {
        self.members.get(id).map(|e| self.info(e))
    }

    /// What the failure detector reads for a member now: its phi (computed
    /// as the phi-accrual detector would, whichever detector is configured)
    /// and how long its heartbeat has been silent here. `None` for the local
    /// member (it does not watch itself) and for unknown ids. For operators:
    /// the verdict is [`Membership::status`].
    pub fn health(&self, id: &str) -> Option<Health> {
        if id == self.local_id.as_str() {
            return None;
        }
        self.members.get(id).map(|e| Health {
            phi: e.liveness.phi(self.now, self.config.interval),
            silence: e.liveness.silence(self.now),
        })
    }

    /// A member's status, if known.
    pub fn status(&self, id: &str) -> Option<Status> {
        self.members.get(id).map(|e| self.status_of(e))
    }

    /// Whether a member is known and up (alive, suspect or leaving): whether
    /// requests and hints may be sent to it.
    pub fn is_alive(&self, id: &str) -> bool {
        self.status(id).is_some_and(Status::is_up)
    }

    /// Storage members that are up, sorted by id: where requests can go now.
    pub fn live_storage_members(&self) -> Vec<MemberInfo> {
        self.members
            .values()
            .filter(|e| e.record.role == Role::Storage)
            .map(|e| self.info(e))
            .filter(|m| m.status.is_up())
            .collect()
    }

    /// Storage members that have not left, down ones included, sorted by id:
    /// the set to build the ring from. A down member keeps its ranges (sloppy
    /// quorum and hints cover it) so that a blip does not move data; it leaves
    /// the ring when it leaves or is forgotten.
    pub fn ring_members(&self) -> Vec<MemberInfo> {
        self.members
            .values()
            .filter(|e| e.record.role == Role::Storage && e.record.lifecycle != Lifecycle::Left)
            .map(|e| self.info(e))
            .collect()
    }

    fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    fn local_entry(&self) -> &Entry {
        self.members
            .get(&self.local_id)
            .unwrap_or_else(|| unreachable!("the local entry is never removed"))
    }

    fn local_record(&self) -> &Record {
        &self.local_entry().record
    }

    fn local_record_mut(&mut self) -> &mut Record {
        &mut self
            .members
            .get_mut(&self.local_id)
            .unwrap_or_else(|| unreachable!("the local entry is never removed"))
            .record
    }

    /// Raises the local heartbeat; `meta` marks a change of address, role,
    /// weight or lifecycle, which peers must fetch as a full record.
    fn bump_local(&mut self, meta: bool) {
        let record = self.local_record_mut();
        record.heartbeat = record.heartbeat.saturating_add(1);
        if meta {
            record.meta_version = record.heartbeat;
        }
    }

    /// A version of the local member was heard. Newer than ours and believable
    /// (see [`refute`](Self::refute)): refuted. Beyond what any observer accepts
    /// (an incarnation more than `max_incarnation_jump` above ours, while no
    /// observer knows one above ours): refused, since refuting it would give us
    /// a version that everyone refuses, and it cannot spread anyway.
    fn own_claim(&mut self, version: (u64, u64)) -> Result<(), Refusal> {
        let ours = self.local_record();
        if version <= ours.version() {
            return Ok(());
        }
        if version.0
            > ours
                .incarnation
                .saturating_add(self.config.max_incarnation_jump)
        {
            return Err(Refusal::IncarnationJump);
        }
        self.refute(version);
        Ok(())
    }

    /// Someone holds a version of the local member newer than ours (a previous
    /// process with the same incarnation, or a forged record): jump past it so
    /// that our own state wins everywhere, and make peers fetch it in full.
    ///
    /// A heartbeat within half of `max_heartbeat_jump` of ours is jumped past
    /// (one above it), which every observer's heartbeat bound admits at once.
    /// A heartbeat further ahead (forged within a lenient observer's bound) is
    /// outranked with the next incarnation instead and our own heartbeat, so a
    /// forgery cannot push our heartbeat beyond what the other observers accept.
    /// Only when that incarnation would exceed the jump bound (the forgery
    /// already sits at it) is the heartbeat jumped past after all.
    fn refute(&mut self, version: (u64, u64)) {
        let lead = self.config.max_heartbeat_jump / 2;
        let jump = self.config.max_incarnation_jump;
        let record = self.local_record_mut();
        if version <= (record.incarnation, record.heartbeat) {
            return;
        }
        let near = version.1 <= record.heartbeat.saturating_add(lead);
        if near || version.0 >= record.incarnation.saturating_add(jump) {
            record.incarnation = record.incarnation.max(version.0);
            record.heartbeat = record.heartbeat.max(version.1).saturating_add(1);
        } else {
            record.incarnation = record.incarnation.max(version.0).saturating_add(1);
            record.heartbeat = record.heartbeat.saturating_add(1);
        }
        record.meta_version = record.heartbeat;
    }

    /// Counts a refusal, and reports it if `from` was not yet refused for
    /// `reason` (and the report set has room).
    fn refuse(&mut self, from: &MemberId, id: &MemberId, reason: Refusal) {
        self.refusals = self.refusals.saturating_add(1);
        if self.reported.len() < self.config.max_members
            && self.reported.insert((from.clone(), reason))
        {
            self.push_events(vec![Event::Refused {
                from: from.clone(),
                id: id.clone(),
                reason,
            }]);
        }
    }

    fn expire_pending_acks(&mut self) {
        let (now, ttl) = (self.now, self.config.pending_ack_ttl);
        self.pending_acks
            .retain(|_, p| now.saturating_sub(p.sent_at) < ttl);
    }

    /// Remembers that our Ack asked `from` for `requests`, so that its Ack2
    /// (and only it) can bring them.
    fn expect_ack2(&mut self, from: &MemberId, requests: &[MemberId]) {
        self.expire_pending_acks();
        if !self.pending_acks.contains_key(from)
            && self.pending_acks.len() >= self.config.max_pending_acks
        {
            let oldest = self
                .pending_acks
                .iter()
                .min_by_key(|(_, p)| p.sent_at)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.pending_acks.remove(&oldest);
            }
        }
        let cap = self.config.max_members + self.config.max_new_members_per_message;
        let now = self.now;
        let pending = self
            .pending_acks
            .entry(from.clone())
            .or_insert_with(|| PendingAck {
                requested: BTreeSet::new(),
                sent_at: now,
            });
        if pending.requested.len() + requests.len() > cap {
            pending.requested.clear();
        }
        pending.sent_at = now;
        pending.requested.extend(requests.iter().cloned());
    }

    /// Merges the records of an Ack2 that our Ack asked `from` for; refuses
    /// the rest, so that no one can push records we did not ask for. A request
    /// stays answerable until the exchange expires: with delayed or duplicated
    /// Syns an honest peer answers the same request twice, and a repeated
    /// record still passes every version check.
    fn handle_ack2(&mut self, from: &MemberId, records: Vec<Record>) {
        self.expire_pending_acks();
        let requested = self.pending_acks.get(from).map(|p| &p.requested);
        let (wanted, unwanted): (Vec<Record>, Vec<Record>) = records
            .into_iter()
            .partition(|r| requested.is_some_and(|ids| ids.contains(&r.id)));
        for record in unwanted {
            self.refuse(from, &record.id, Refusal::Unrequested);
        }
        self.merge_records(from, wanted);
    }

    fn status_of(&self, entry: &Entry) -> Status {
        status_of(entry, &self.local_id, self.now, &self.config)
    }

    fn info(&self, entry: &Entry) -> MemberInfo {
        info(entry, self.status_of(entry))
    }

    fn push_events(&mut self, events: Vec<Event>) {
        for event in events {
            if self.events.len() >= self.config.max_pending_events {
                self.events.pop_front();
                self.dropped_events = self.dropped_events.saturating_add(1);
            }
            self.events.push_back(event);
        }
    }

    /// Marks silent members down and forgets expired ones.
    fn sweep(&mut self) {
        let now = self.now;
        let mut events = Vec::new();
        let mut forget = Vec::new();
        for (id, entry) in &mut self.members {
            if *id == self.local_id {
                continue;
            }
            if entry.record.lifecycle == Lifecycle::Left {
                let left_at = *entry.left_at.get_or_insert(now);
                if now.saturating_sub(left_at) >= self.config.tombstone_ttl {
                    forget.push(id.clone());
                }
                continue;
            }
            match entry.down_since {
                None => {
                    let verdict =
                        entry
                            .liveness
                            .verdict(now, &self.config.detector, self.config.interval);
                    if verdict == Verdict::Down {
                        entry.down_since = Some(now);
                        events.push(Event::Down { id: id.clone() });
                    }
                }
                Some(since) => {
                    if now.saturating_sub(since) >= self.config.forget_down_after {
                        forget.push(id.clone());
                    }
                }
            }
        }
        for id in forget {
            if let Some(entry) = self.members.remove(&id) {
                self.quarantine.insert(
                    id.clone(),
                    Quarantined {
                        version: entry.record.version(),
                        until: now.saturating_add(self.config.quarantine),
                    },
                );
                events.push(Event::Forgotten { id });
            }
        }
        self.quarantine.retain(|_, q| q.until > now);
        self.push_events(events);
    }

    fn choose_targets(&mut self) -> Vec<String> {
        let mut live = Vec::new();
        let mut down = Vec::new();
        for entry in self.members.values() {
            if entry.record.id == self.local_id {
                continue;
            }
            match self.status_of(entry) {
                Status::Left => {}
                Status::Down => down.push(entry.record.address.as_str()),
                Status::Alive | Status::Suspect | Status::Leaving => {
                    live.push(entry.record.address.as_str())
                }
            }
        }
        let fanout = self.config.fanout;
        let mut targets: Vec<String> = Vec::with_capacity(fanout + 2);
        let rng = &mut self.rng;
        if live.is_empty() {
            let amount = fanout.min(self.seeds.len());
            for i in index::sample(rng, self.seeds.len(), amount) {
                targets.push(self.seeds[i].clone());
            }
        } else {
            for i in index::sample(rng, live.len(), fanout.min(live.len())) {
                targets.push(live[i].to_owned());
            }
            // Seeds now and then, so that clusters which lost each other (a long
            // partition, everyone forgotten) meet again, as Cassandra does.
            let denominator = live.len() as f64 + 1.0;
            if !self.seeds.is_empty()
                && rng.gen_bool((self.seeds.len() as f64 / denominator).min(1.0))
            {
                let seed = &self.seeds[rng.gen_range(0..self.seeds.len())];
                targets.push(seed.clone());
            }
        }
        // Down members now and then: the only way to notice that one is back
        // when no live member talks to it either (a healed partition).
        if !down.is_empty() {
            let denominator = live.len() as f64 + 1.0;
            if rng.gen_bool((down.len() as f64 / denominator).min(1.0)) {
                targets.push(down[rng.gen_range(0..down.len())].to_owned());
            }
        }
        let own = &self.local_entry().record.address;
        let mut seen = BTreeSet::new();
        targets.retain(|t| t != own && seen.insert(t.clone()));
        targets
    }

    fn message(&self, body: Body) -> Message {
        Message {
            version: PROTOCOL_VERSION,
            from: self.local_id.clone(),
            body,
        }
    }

    /// The local digest, whole if it fits the size cap, otherwise a window of
    /// the sorted list from a random start (the local member always included).
    fn build_syn(&mut self) -> Message {
        let budget = self
            .config
            .max_message_bytes
            .saturating_sub(header_len(&self.local_id) + 8 + 1);
        let total: usize = self.members.keys().map(Digest::encoded_len_of).sum();
        let (digest, complete) = if total <= budget {
            let digest = self.members.values().map(|e| e.record.digest()).collect();
            (digest, true)
        } else {
            let entries: Vec<&Entry> = self.members.values().collect();
            let mut chosen = vec![false; entries.len()];
            let mut used = Digest::encoded_len_of(&self.local_id);
            let start = self.rng.gen_range(0..entries.len());
            for offset in 0..entries.len() {
                let i = (start + offset) % entries.len();
                let entry = entries[i];
                if entry.record.id == self.local_id {
                    chosen[i] = true;
                    continue;
                }
                let len = Digest::encoded_len_of(&entry.record.id);
                if used + len > budget {
                    break;
                }
                used += len;
                chosen[i] = true;
            }
            let digest = entries
                .iter()
                .zip(&chosen)
                .filter(|(_, c)| **c)
                .map(|(e, _)| e.record.digest())
                .collect();
            (digest, false)
        };
        self.message(Body::Syn(Syn { digest, complete }))
    }

    /// Merges a digest in one pass over both sorted lists and builds the answer.
    fn handle_syn(&mut self, from: &MemberId, syn: &Syn) -> Option<Ack> {
        let now = self.now;
        let window = window_of(&self.config.detector);
        let mut events = Vec::new();
        let mut records = Vec::new();
        let mut heartbeats = Vec::new();
        let mut requests = Vec::new();
        let mut refute_to = None;
        let mut leave_ack = false;
        let mut refused = Vec::new();
        // Unknown members asked for: bounded per message and by the room left.
        let mut new_budget = self
            .config
            .max_new_members_per_message
            .min(self.config.max_members.saturating_sub(self.members.len()));

        let mut digest = syn.digest.iter();
        let mut mine = self.members.iter_mut();
        let mut d = digest.next();
        let mut m = mine.next();
        // Each step consumes at least one item of one list, so this ends after
        // at most `digest.len() + members.len()` steps.
        loop {
            let order = match (d, &m) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(de), Some((id, _))) => de.id.cmp(id),
            };
            match order {
                Ordering::Less => {
                    // Only the initiator knows this member.
                    if let Some(de) = d {
                        let stale = self
                            .quarantine
                            .get(&de.id)
                            .is_some_and(|q| q.version >= de.version());
                        if !stale {
                            match check_unknown(&self.config, &self.quarantine, de) {
                                Err(reason) => refused.push((de.id.clone(), reason)),
                                // Past the budget it is left for a later round.
                                Ok(()) if new_budget > 0 => {
                                    new_budget -= 1;
                                    requests.push(de.id.clone());
                                }
                                Ok(()) => {}
                            }
                        }
                    }
                    d = digest.next();
                }
                Ordering::Greater => {
                    // Only we know this member; say so if the digest is whole.
                    if let Some((_, entry)) = &m {
                        if syn.complete {
                            records.push(entry.record.clone());
                        }
                    }
                    m = mine.next();
                }
                Ordering::Equal => {
                    if let (Some(de), Some((id, entry))) = (d, m.as_mut()) {
                        let ours = &entry.record;
                        let same_meta = (de.incarnation, de.meta_version)
                            == (ours.incarnation, ours.meta_version);
                        if **id == self.local_id {
                            if de.version() > ours.version() {
                                refute_to = Some(de.version());
                            } else if de.version() < ours.version() {
                                push_newer(ours, de, &mut records, &mut heartbeats);
                            }
                            leave_ack = same_meta && ours.lifecycle == Lifecycle::Left;
                        } else {
                            match de.version().cmp(&ours.version()) {
                                Ordering::Greater
                                    if rose_too_soon(&self.config, now, entry, de) => {}
                                Ordering::Greater => {
                                    match check_known(&self.config, now, entry, de) {
                                        Err(reason) => refused.push((de.id.clone(), reason)),
                                        Ok(()) if same_meta => adopt_heartbeat(
                                            id,
                                            entry,
                                            de.heartbeat,
                                            now,
                                            window,
                                            &mut events,
                                        ),
                                        Ok(()) => requests.push(de.id.clone()),
                                    }
                                }
                                Ordering::Less => {
                                    push_newer(ours, de, &mut records, &mut heartbeats)
                                }
                                Ordering::Equal => {}
                            }
                        }
                    }
                    d = digest.next();
                    m = mine.next();
                }
            }
        }
        drop(mine);
        self.push_events(events);
        if leave_ack {
            self.leave_acks.insert(from.clone());
        }
        if let Some(version) = refute_to {
            match self.own_claim(version) {
                Ok(()) => {
                    // Our refuted record must reach the initiator in full.
                    records.retain(|r| r.id != self.local_id);
                    records.push(self.local_record().clone());
                }
                Err(reason) => refused.push((self.local_id.clone(), reason)),
            }
        }
        for (id, reason) in refused {
            self.refuse(from, &id, reason);
        }
        let echo = self.members.get(from).map(|e| e.record.digest());
        // The initiator's own record first: it is the one a joiner needs spread.
        if let Some(pos) = requests.iter().position(|id| id == from) {
            requests[..=pos].rotate_right(1);
        }
        if records.is_empty() && heartbeats.is_empty() && requests.is_empty() {
            // Nothing to tell; the echo alone is worth sending only to a leaver.
            let leaving = self
                .members
                .get(from)
                .is_some_and(|e| e.record.lifecycle == Lifecycle::Left);
            if !leaving {
                return None;
            }
        }
        let mut budget = self.config.max_message_bytes.saturating_sub(
            header_len(&self.local_id) + 24 + 1 + echo.as_ref().map_or(0, Digest::encoded_len),
        );
        truncate_to_budget(&mut requests, &mut budget, |id| 8 + id.as_str().len());
        truncate_to_budget(&mut records, &mut budget, Record::encoded_len);
        truncate_to_budget(&mut heartbeats, &mut budget, Digest::encoded_len);
        if !requests.is_empty() {
            self.expect_ack2(from, &requests);
        }
        Some(Ack {
            records,
            heartbeats,
            requests,
            echo,
        })
    }

    /// Merges an answer to our digest and answers its requests.
    fn handle_ack(&mut self, from: &MemberId, ack: Ack) -> Option<Ack2> {
        self.merge_records(from, ack.records);
        self.merge_heartbeats(from, &ack.heartbeats);
        if let Some(echo) = &ack.echo {
            let ours = self.local_record();
            if ours.lifecycle == Lifecycle::Left
                && (echo.incarnation, echo.meta_version) == (ours.incarnation, ours.meta_version)
            {
                self.leave_acks.insert(from.clone());
            }
        }
        if ack.requests.is_empty() {
            return None;
        }
        let mut budget = self
            .config
            .max_message_bytes
            .saturating_sub(header_len(&self.local_id) + 8);
        let mut records = Vec::new();
        for id in &ack.requests {
            if let Some(entry) = self.members.get(id.as_str()) {
                let len = entry.record.encoded_len();
                if len > budget {
                    break;
                }
                budget -= len;
                records.push(entry.record.clone());
            }
        }
        if records.is_empty() {
            return None;
        }
        Some(Ack2 { records })
    }

    /// Takes newer heartbeats for members whose metadata we hold, walking the
    /// id-sorted list (validated on receipt) alongside our own sorted map.
    fn merge_heartbeats(&mut self, from: &MemberId, digests: &[Digest]) {
        let now = self.now;
        let window = window_of(&self.config.detector);
        let mut events = Vec::new();
        let mut refute_to = None;
        let mut refused = Vec::new();
        let mut mine = self.members.iter_mut();
        let mut m = mine.next();
        for de in digests {
            // Skip our members that sort before this entry; bounded by the map.
            while let Some((id, _)) = &m {
                if **id >= de.id {
                    break;
                }
                m = mine.next();
            }
            let Some((id, entry)) = m.as_mut() else {
                break;
            };
            if **id != de.id {
                continue;
            }
            let ours = &entry.record;
            if **id == self.local_id {
                if de.version() > ours.version() {
                    refute_to = Some(de.version());
                }
            } else if (de.incarnation, de.meta_version) == (ours.incarnation, ours.meta_version)
                && de.heartbeat > ours.heartbeat
            {
                match check_known(&self.config, now, entry, de) {
                    Ok(()) => adopt_heartbeat(id, entry, de.heartbeat, now, window, &mut events),
                    Err(reason) => refused.push((de.id.clone(), reason)),
                }
            }
        }
        self.push_events(events);
        if let Some(version) = refute_to {
            if let Err(reason) = self.own_claim(version) {
                refused.push((self.local_id.clone(), reason));
            }
        }
        for (id, reason) in refused {
            self.refuse(from, &id, reason);
        }
    }

    /// Merges the records of one message from `from`, admitting at most
    /// `max_new_members_per_message` unknown members.
    fn merge_records(&mut self, from: &MemberId, records: Vec<Record>) {
        let mut new_budget = self.config.max_new_members_per_message;
        for record in records {
            self.merge_record(from, record, &mut new_budget);
        }
    }

    /// Why a record from `from` cannot be merged, if it cannot: a weight its
    /// owner cannot have, a version its owner cannot have reached yet, or no
    /// room for another member. `Ok(false)`: nothing to merge (not newer, stale,
    /// or left for a later message).
    fn admit(&self, record: &Record, new_budget: &mut usize) -> Result<bool, Refusal> {
        if !weight_ok(&self.config, record) {
            return Err(Refusal::Weight);
        }
        match self.members.get(record.id.as_str()) {
            Some(entry) => {
                let claim = record.digest();
                if record.version() <= entry.record.version()
                    || rose_too_soon(&self.config, self.now, entry, &claim)
                {
                    return Ok(false);
                }
                check_known(&self.config, self.now, entry, &claim)?;
            }
            None => {
                let stale = self
                    .quarantine
                    .get(record.id.as_str())
                    .is_some_and(|q| q.version >= record.version());
                if stale {
                    return Ok(false);
                }
                check_unknown(&self.config, &self.quarantine, &record.digest())?;
                if self.members.len() >= self.config.max_members {
                    return Err(Refusal::TooManyMembers);
                }
                if *new_budget == 0 {
                    return Ok(false);
                }
                *new_budget -= 1;
            }
        }
        Ok(true)
    }

    /// Newest `(incarnation, heartbeat)` wins; an older or equal version is
    /// ignored, so merging is idempotent and order-insensitive. Records that
    /// [`admit`](Self::admit) refuses are counted and reported instead.
    fn merge_record(&mut self, from: &MemberId, record: Record, new_budget: &mut usize) {
        let now = self.now;
        if record.id == self.local_id {
            let verdict = if weight_ok(&self.config, &record) {
                self.own_claim(record.version())
            } else {
                Err(Refusal::Weight)
            };
            if let Err(reason) = verdict {
                self.refuse(from, &record.id, reason);
            }
            return;
        }
        match self.admit(&record, new_budget) {
            Ok(true) => {}
            Ok(false) => return,
            Err(reason) => {
                self.refuse(from, &record.id, reason);
                return;
            }
        }
        let window = window_of(&self.config.detector);
        let mut events = Vec::new();
        match self.members.get_mut(record.id.as_str()) {
            None => {
                self.quarantine.remove(record.id.as_str());
                let left = record.lifecycle == Lifecycle::Left;
                let entry = Entry {
                    record,
                    liveness: Liveness::new(now),
                    down_since: None,
                    left_at: left.then_some(now),
                    heard_at: now,
                    risen_at: None,
                };
                if !left {
                    // A member first heard of as already gone is only a
                    // tombstone to pass on, not news for the caller.
                    events.push(Event::Joined(info(
                        &entry,
                        status_of(&entry, &self.local_id, now, &self.config),
                    )));
                }
                self.members.insert(entry.record.id.clone(), entry);
            }
            Some(entry) => {
                if record.version() <= entry.record.version() {
                    return;
                }
                let before = info(entry, status_of(entry, &self.local_id, now, &self.config));
                let old = std::mem::replace(&mut entry.record, record);
                let new = &entry.record;
                let restarted = new.incarnation > old.incarnation;
                entry.heard_at = now;
                if restarted {
                    entry.risen_at = Some(now);
                    entry.liveness = Liveness::new(now);
                } else {
                    entry.liveness.observe_rise(now, window);
                }
                let was_down = entry.down_since.take().is_some();
                let id = new.id.clone();
                if new.lifecycle == Lifecycle::Left {
                    if old.lifecycle != Lifecycle::Left {
                        entry.left_at = Some(now);
                        events.push(Event::Left { id });
                    }
                } else if old.lifecycle == Lifecycle::Left {
                    entry.left_at = None;
                    events.push(Event::Joined(info(
                        entry,
                        status_of(entry, &self.local_id, now, &self.config),
                    )));
                } else {
                    if restarted {
                        events.push(Event::Restarted {
                            id: id.clone(),
                            incarnation: new.incarnation,
                        });
                    }
                    if was_down {
                        events.push(Event::Up { id: id.clone() });
                    }
                    if (&old.address, old.role, old.weight, &old.zone)
                        != (&new.address, new.role, new.weight, &new.zone)
                    {
                        let after =
                            info(entry, status_of(entry, &self.local_id, now, &self.config));
                        events.push(Event::Changed { before, after });
                    }
                    if entry.record.lifecycle == Lifecycle::Leaving
                        && old.lifecycle != Lifecycle::Leaving
                    {
                        events.push(Event::Leaving { id });
                    }
                }
            }
        }
        self.push_events(events);
    }
}

/// Adds our newer knowledge of a member to an answer: the full record if the
/// initiator's metadata is stale, the heartbeat alone otherwise.
fn push_newer(
    ours: &Record,
    theirs: &Digest,
    records: &mut Vec<Record>,
    heartbeats: &mut Vec<Digest>,
) {
    if (ours.incarnation, ours.meta_version) != (theirs.incarnation, theirs.meta_version) {
        records.push(ours.clone());
    } else {
        heartbeats.push(ours.digest());
    }
}

/// Takes a higher heartbeat for a member whose metadata we already hold.
fn adopt_heartbeat(
    id: &MemberId,
    entry: &mut Entry,
    heartbeat: u64,
    now: Duration,
    window: usize,
    events: &mut Vec<Event>,
) {
    if heartbeat <= entry.record.heartbeat {
        return;
    }
    entry.record.heartbeat = heartbeat;
    entry.heard_at = now;
    entry.liveness.observe_rise(now, window);
    if entry.down_since.take().is_some() && entry.record.lifecycle != Lifecycle::Left {
        events.push(Event::Up { id: id.clone() });
    }
}

/// Whether `record` carries a weight its owner could gossip: flag bits
/// (`weight_flags`) aside, `1..=max_weight` for a storage member, whose weight
/// builds the ring, and up to `max_weight` for a gateway, which owns no ranges
/// and may say 0.
fn weight_ok(config: &Config, record: &Record) -> bool {
    let weight = record.weight & !config.weight_flags;
    match record.role {
        Role::Storage => (1..=config.max_weight).contains(&weight),
        Role::Gateway => weight <= config.max_weight,
    }
}

/// Whether a version newer than ours of a known member can come from it.
///
/// - Incarnation: at most `max_incarnation_jump` above the known one (honest
///   restarts add one, or the wall-clock time since the last start). Rises are
///   also taken at most once per `interval` (see [`rose_too_soon`]).
/// - Heartbeat: at most the last accepted one plus `heartbeat_slack` per
///   interval since then (rounded up) plus `max_heartbeat_jump`. The owner
///   adds one per tick, and a restarted process starts again from 0, so an
///   honest heartbeat never runs ahead of that; a forged one can lead the real
///   one by at most the bound, which its owner's refutation then outranks.
///
/// Safe for honest members: both bounds grow with silence, so a member heard
/// after a partition or long loss is admitted, and one refused for a moment
/// (e.g. its refutation arriving just after a forged rise) is admitted a round
/// later.
fn check_known(
    config: &Config,
    now: Duration,
    entry: &Entry,
    claim: &Digest,
) -> Result<(), Refusal> {
    let ours = &entry.record;
    if claim.incarnation.saturating_sub(ours.incarnation) > config.max_incarnation_jump {
        return Err(Refusal::IncarnationJump);
    }
    let intervals = u64::try_from(
        now.saturating_sub(entry.heard_at).as_nanos() / config.interval.as_nanos().max(1),
    )
    .unwrap_or(u64::MAX)
    .saturating_add(1);
    let bound = ours
        .heartbeat
        .saturating_add(config.heartbeat_slack.saturating_mul(intervals))
        .saturating_add(config.max_heartbeat_jump);
    if claim.heartbeat > bound {
        return Err(Refusal::HeartbeatJump);
    }
    Ok(())
}

/// Whether a claimed incarnation rise comes less than an `interval` after the
/// last one taken for this member. Such a rise is not refused, only left for a
/// later message (gossip offers it again): a crash-looping process may restart
/// twice in a round, but a forger could otherwise climb by
/// `max_incarnation_jump` once per message, towards `u64::MAX`, instead of once
/// per interval.
fn rose_too_soon(config: &Config, now: Duration, entry: &Entry, claim: &Digest) -> bool {
    claim.incarnation > entry.record.incarnation
        && entry
            .risen_at
            .is_some_and(|at| now.saturating_sub(at) < config.interval)
}

/// Whether a version of a member we hold nothing about can come from it: its
/// incarnation at most `max_incarnation_jump` above the quarantined one, or
/// above 0. Its heartbeat cannot be judged (it may have run for years), and
/// needs no bound: its owner outranks any heartbeat with the next incarnation,
/// which stays within everyone's bound (see `Membership::refute`).
fn check_unknown(
    config: &Config,
    quarantine: &BTreeMap<MemberId, Quarantined>,
    claim: &Digest,
) -> Result<(), Refusal> {
    let base = quarantine.get(claim.id.as_str()).map_or(0, |q| q.version.0);
    if claim.incarnation > base.saturating_add(config.max_incarnation_jump) {
        return Err(Refusal::IncarnationJump);
    }
    Ok(())
}

/// Keeps the longest prefix of `items` that fits in `budget`, and charges it.
fn truncate_to_budget<T>(items: &mut Vec<T>, budget: &mut usize, len: impl Fn(&T) -> usize) {
    let mut keep = 0;
    for item in items.iter() {
        let l = len(item);
        if l > *budget {
            break;
        }
        *budget -= l;
        keep += 1;
    }
    items.truncate(keep);
}

fn status_of(entry: &Entry, local_id: &MemberId, now: Duration, config: &Config) -> Status {
    match entry.record.lifecycle {
        Lifecycle::Left => Status::Left,
        _ if entry.down_since.is_some() => Status::Down,
        Lifecycle::Leaving => Status::Leaving,
        Lifecycle::Active if entry.record.id == *local_id => Status::Alive,
        Lifecycle::Active => match entry
            .liveness
            .verdict(now, &config.detector, config.interval)
        {
            Verdict::Fresh => Status::Alive,
            // Down is declared only by `tick`, which also reports the event.
            Verdict::Suspect | Verdict::Down => Status::Suspect,
        },
    }
}

fn info(entry: &Entry, status: Status) -> MemberInfo {
    let r = &entry.record;
    MemberInfo {
        id: r.id.clone(),
        address: r.address.clone(),
        role: r.role,
        status,
        weight: r.weight,
        zone: r.zone.clone(),
        heartbeat: r.heartbeat,
        incarnation: r.incarnation,
    }
}
