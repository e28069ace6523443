//! What members send each other: a three-way scuttlebutt exchange.
//!
//! ```text
//! initiator                         receiver
//!     ── Syn  { digest } ──────────────▶   merges newer heartbeats from the digest,
//!                                          finds what either side lacks
//!     ◀───────── Ack { records, heartbeats, requests } ──
//! merges, answers requests
//!     ── Ack2 { records } ─────────────▶   merges
//! ```
//!
//! A digest entry is `(id, incarnation, meta_version, heartbeat)`, about 40 bytes,
//! so most rounds move heartbeats without ever repeating addresses, roles,
//! weights or zones. Full [`Record`]s travel only when a receiver lacks a member or has an
//! older `(incarnation, meta_version)` for it.
//!
//! Size bound: every message the crate builds is at most `Config::max_message_bytes`
//! when encoded with bincode 1's default (fixed-int) options, the most verbose
//! common encoding; the estimate is [`Message::encoded_len`]. A digest that would
//! not fit is cut to a window of the id-sorted list starting at a random member
//! and flagged incomplete, so over a few rounds every member is covered.

use serde::{Deserialize, Serialize};

use crate::error::GossipError;
use crate::member::{Lifecycle, MemberId, Role, MAX_ADDRESS_LEN, MAX_ID_LEN, MAX_ZONE_LEN};

/// Protocol version this build speaks and accepts. Bump it on any change to the
/// message layout; receivers refuse other versions with
/// [`GossipError::UnsupportedVersion`]. Version 2 added [`Record::zone`].
pub const PROTOCOL_VERSION: u16 = 2;

/// Smallest encoded size of one entry (a digest entry with a one-byte id, or a
/// request), used to refuse messages with absurd entry counts before touching them.
const MIN_ENTRY_LEN: usize = 9;

/// One gossip message. `version` comes first so that a decoder can read it before
/// the rest of a message from a newer build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Protocol version of the sender, [`PROTOCOL_VERSION`].
    pub version: u16,
    /// Sender's member id.
    pub from: MemberId,
    /// The exchange step.
    pub body: Body,
}

/// Step of the three-way exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Opens an exchange with the initiator's digest.
    Syn(Syn),
    /// The receiver's answer: what it knows better, what it wants.
    Ack(Ack),
    /// The initiator's answer to the receiver's requests.
    Ack2(Ack2),
}

/// Opening message of an exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Syn {
    /// Versions the initiator knows, sorted by id.
    pub digest: Vec<Digest>,
    /// False when the digest was cut to fit the size cap; the receiver then cannot
    /// infer that a member absent from it is unknown to the initiator.
    pub complete: bool,
}

/// The receiver's answer to a [`Syn`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// Members the initiator lacks or has older metadata for.
    pub records: Vec<Record>,
    /// Members for which only the heartbeat is newer than the initiator's,
    /// sorted by id.
    pub heartbeats: Vec<Digest>,
    /// Members the receiver wants full records for.
    pub requests: Vec<MemberId>,
    /// The receiver's version of the initiator after merging the digest (`None`
    /// if it still lacks the initiator's record), so the initiator learns what it
    /// has spread: a leaving member counts these confirmations.
    pub echo: Option<Digest>,
}

/// The initiator's answer to [`Ack::requests`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack2 {
    /// Requested records.
    pub records: Vec<Record>,
}

/// A member's version, without its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Member id.
    pub id: MemberId,
    /// Process generation.
    pub incarnation: u64,
    /// Heartbeat at which the member last changed its address, role, weight or
    /// lifecycle (its zone changes only with its incarnation); equal
    /// `(incarnation, meta_version)` means equal metadata.
    pub meta_version: u64,
    /// Latest heartbeat.
    pub heartbeat: u64,
}

/// A member's full gossiped state, written only by the member itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Member id.
    pub id: MemberId,
    /// Where to reach it.
    pub address: String,
    /// Storage or gateway.
    pub role: Role,
    /// Relative capacity.
    pub weight: u32,
    /// Failure domain, 1..=[`MAX_ZONE_LEN`] bytes.
    pub zone: String,
    /// Active, leaving or left.
    pub lifecycle: Lifecycle,
    /// Process generation.
    pub incarnation: u64,
    /// See [`Digest::meta_version`].
    pub meta_version: u64,
    /// Latest heartbeat.
    pub heartbeat: u64,
}

impl Digest {
    /// Bincode fixed-int size.
    pub(crate) fn encoded_len(&self) -> usize {
        Self::encoded_len_of(&self.id)
    }

    /// Bincode fixed-int size of the digest entry of member `id`.
    pub(crate) fn encoded_len_of(id: &MemberId) -> usize {
        8 + id.as_str().len() + 24
    }

    /// `(incarnation, heartbeat)`: the order in which versions of a member win.
    pub(crate) fn version(&self) -> (u64, u64) {
        (self.incarnation, self.heartbeat)
    }

    fn validate(&self) -> Result<(), GossipError> {
        check_len("id", self.id.as_str(), MAX_ID_LEN)?;
        check_meta(&self.id, self.meta_version, self.heartbeat)
    }
}

impl Record {
    /// Bincode fixed-int size.
    pub(crate) fn encoded_len(&self) -> usize {
        8 + self.id.as_str().len() + 8 + self.address.len() + 4 + 4 + 8 + self.zone.len() + 4 + 24
    }

    /// `(incarnation, heartbeat)`: the order in which versions of a member win.
    pub(crate) fn version(&self) -> (u64, u64) {
        (self.incarnation, self.heartbeat)
    }

    /// The digest entry describing this record.
    pub(crate) fn digest(&self) -> Digest {
        Digest {
            id: self.id.clone(),
            incarnation: self.incarnation,
            meta_version: self.meta_version,
            heartbeat: self.heartbeat,
        }
    }

    fn validate(&self) -> Result<(), GossipError> {
        check_len("id", self.id.as_str(), MAX_ID_LEN)?;
        check_len("address", &self.address, MAX_ADDRESS_LEN)?;
        check_len("zone", &self.zone, MAX_ZONE_LEN)?;
        check_meta(&self.id, self.meta_version, self.heartbeat)
    }
}

impl Message {
    /// Bincode 1 fixed-int encoded size: version, sender id, body tag, body.
    pub fn encoded_len(&self) -> usize {
        header_len(&self.from)
            + match &self.body {
                Body::Syn(syn) => 8 + syn.digest.iter().map(Digest::encoded_len).sum::<usize>() + 1,
                Body::Ack(ack) => {
                    24 + 1
                        + ack.echo.as_ref().map_or(0, Digest::encoded_len)
                        + ack.records.iter().map(Record::encoded_len).sum::<usize>()
                        + ack
                            .heartbeats
                            .iter()
                            .map(Digest::encoded_len)
                            .sum::<usize>()
                        + ack
                            .requests
                            .iter()
                            .map(|id| 8 + id.as_str().len())
                            .sum::<usize>()
                }
                Body::Ack2(ack2) => 8 + ack2.records.iter().map(Record::encoded_len).sum::<usize>(),
            }
    }

    /// Checks everything the merge relies on, before anything is merged.
    pub(crate) fn validate(&self, max_message_bytes: usize) -> Result<(), GossipError> {
        if self.version != PROTOCOL_VERSION {
            return Err(GossipError::UnsupportedVersion {
                got: self.version,
                supported: PROTOCOL_VERSION,
            });
        }
        check_len("id", self.from.as_str(), MAX_ID_LEN)?;
        let max = max_message_bytes / MIN_ENTRY_LEN;
        let count = match &self.body {
            Body::Syn(syn) => syn.digest.len(),
            Body::Ack(ack) => ack.records.len() + ack.heartbeats.len() + ack.requests.len(),
            Body::Ack2(ack2) => ack2.records.len(),
        };
        if count > max {
            return Err(GossipError::TooManyEntries { count, max });
        }
        match &self.body {
            Body::Syn(syn) => {
                check_sorted(&syn.digest)?;
                syn.digest.iter().try_for_each(Digest::validate)
            }
            Body::Ack(ack) => {
                check_sorted(&ack.heartbeats)?;
                ack.records.iter().try_for_each(Record::validate)?;
                ack.heartbeats.iter().try_for_each(Digest::validate)?;
                ack.echo.iter().try_for_each(Digest::validate)?;
                ack.requests
                    .iter()
                    .try_for_each(|id| check_len("id", id.as_str(), MAX_ID_LEN))
            }
            Body::Ack2(ack2) => ack2.records.iter().try_for_each(Record::validate),
        }
    }
}

/// Digest lists are merged against the receiver's sorted map in one pass, so
/// they must be strictly sorted by id.
fn check_sorted(digests: &[Digest]) -> Result<(), GossipError> {
    for pair in digests.windows(2) {
        if pair[0].id >= pair[1].id {
            return Err(GossipError::UnsortedDigest {
                id: pair[1].id.to_string(),
                previous: pair[0].id.to_string(),
            });
        }
    }
    Ok(())
}

/// Encoded size of `version`, `from` and the body's enum tag.
pub(crate) fn header_len(from: &MemberId) -> usize {
    2 + 8 + from.as_str().len() + 4
}

pub(crate) fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), GossipError> {
    if value.is_empty() || value.len() > max {
        return Err(GossipError::BadFieldLength {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn check_meta(id: &MemberId, meta_version: u64, heartbeat: u64) -> Result<(), GossipError> {
    if meta_version > heartbeat {
        return Err(GossipError::InconsistentEntry {
            id: id.to_string(),
            meta_version,
            heartbeat,
        });
    }
    Ok(())
}

/// Largest possible record size, so budgets can reserve room.
pub(crate) const MAX_RECORD_LEN: usize =
    8 + MAX_ID_LEN + 8 + MAX_ADDRESS_LEN + 8 + MAX_ZONE_LEN + 36;

/// Smallest `max_message_bytes` accepted: a header plus one full record of each
/// kind must always fit, or the local member could not even announce itself.
pub(crate) const MIN_MESSAGE_BYTES: usize = 2 + 8 + MAX_ID_LEN + 4 + 24 + 2 * MAX_RECORD_LEN;
