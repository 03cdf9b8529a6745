//! Partitions and claims: a projection split into partitions by a key, and
//! which runner owns each partition.
//!
//! An event belongs to partition [`partition_of`]`(key, partitions)`; every
//! partition has one owner at a time, recorded by the store as a [`Claim`]
//! that its owner renews ([`ProjectionStore::claim`]) and that expires when
//! the owner stops renewing it. Each new owner of a partition raises its
//! generation, and what a runner records for a partition (its checkpoint:
//! [`ProjectionStore::save_claimed_checkpoint`]) is written only while the
//! partition still carries the runner's generation: a runner that lost its
//! claim (frozen past its expiry, cut off from the database) records
//! nothing once another took the partition, even after it wakes up.
//!
//! [`ProjectionStore::claim`]: super::ProjectionStore::claim
//! [`ProjectionStore::save_claimed_checkpoint`]: super::ProjectionStore::save_claimed_checkpoint

use chrono::{DateTime, Utc};

use crate::store::StoreError;

/// The partition of `key` among `partitions` (0 when `partitions` is 0 or
/// 1): FNV-1a (64 bits) of the key's UTF-8 bytes, modulo `partitions`.
///
/// Stable across versions, platforms and processes: it is part of where a
/// projection's state lives, so it never changes (Rust's `DefaultHasher`
/// may change between releases and is not used).
///
/// ```
/// use annals::projection::partition_of;
///
/// assert_eq!(partition_of("flight-1", 1), 0);
/// assert_eq!(partition_of("flight-1", 8), partition_of("flight-1", 8));
/// assert!(partition_of("flight-1", 8) < 8);
/// ```
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    // The remainder is below `partitions`, a u32.
    (fnv1a(key.as_bytes()) % u64::from(partitions)) as u32
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The name of a partition's checkpoint: the projection's own name when it
/// has one partition (so a projection that was never partitioned keeps its
/// checkpoint), else `<projection>#<partition>/<partitions>` (a change of
/// the partition count starts new checkpoints: a rebuild).
pub fn checkpoint_name(projection: &str, partition: u32, partitions: u32) -> String {
    if partitions <= 1 {
        projection.to_owned()
    } else {
        format!("{projection}#{partition}/{partitions}")
    }
}

/// A new owner id for a runner of this process: `<label>-<pid>-<random>`,
/// unique per call, and readable in a list of owners.
pub fn owner_id(label: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{label}-{}-{}", std::process::id(), &random[..8])
}

/// An owner's claim on one partition of a projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The projection (or process manager).
    pub projection: String,
    /// The partition, below `partitions`.
    pub partition: u32,
    /// How many partitions the projection has.
    pub partitions: u32,
    /// Who holds it (a runner's id, unique per process and start).
    pub owner: String,
    /// Raised by each new owner: what the owner records for the partition
    /// carries it, and is refused once the partition has a newer one.
    pub generation: u64,
    /// When it ends unless renewed.
    pub expires_at: DateTime<Utc>,
}

impl Claim {
    /// The name of the partition's checkpoint ([`checkpoint_name`]).
    pub fn checkpoint_name(&self) -> String {
        checkpoint_name(&self.projection, self.partition, self.partitions)
    }

    /// What a write under this claim fails with once the partition is no
    /// longer the claim's: [`StoreError::Fenced`].
    pub fn fenced(&self) -> StoreError {
        StoreError::Fenced {
            projection: self.projection.clone(),
            partition: self.partition,
            generation: self.generation,
        }
    }
}

/// A partition as operators see it: its owner, if any, and its generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOwner {
    /// The partition.
    pub partition: u32,
    /// Who holds it; `None` when it is free.
    pub owner: Option<String>,
    /// Its current generation (0: never claimed).
    pub generation: u64,
    /// When the current claim ends unless renewed.
    pub expires_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv_1a() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            partition_of("a", 1000),
            (0xaf63_dc4c_8601_ec8c_u64 % 1000) as u32
        );
    }

    #[test]
    fn keys_spread_over_the_partitions() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[partition_of(&format!("flight-{i}"), 8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn one_partition_keeps_the_projection_name() {
        assert_eq!(checkpoint_name("flights", 0, 1), "flights");
        assert_eq!(checkpoint_name("flights", 3, 8), "flights#3/8");
    }
}
