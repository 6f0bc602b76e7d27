//! The hash-key space: a record's 128-bit hash key (MD5 of its partition
//! key, as in Kinesis, unless it gives an explicit one) picks the shard
//! whose inclusive range contains it. Server, client and processors route
//! with [`shard_for`], so they always agree.

use md5::{Digest, Md5};

/// The Kinesis rule: MD5 of the partition key, read as a big-endian 128-bit
/// integer.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// The shard of `shard_count` a record goes to: by its explicit hash key
/// if it has one, else by its partition key's.
pub fn shard_for(partition_key: &str, explicit_hash_key: Option<u128>, shard_count: u32) -> u32 {
    let hash = explicit_hash_key.unwrap_or_else(|| hash_key(partition_key));
    shard_for_hash_key(hash, shard_count)
}

/// floor(2^128 / shard_count), computed without overflowing u128; `None`
/// for one shard, whose range (the whole space) is 2^128 wide.
fn range_width(shard_count: u32) -> Option<u128> {
    let count = u128::from(shard_count);
    (shard_count > 1).then(|| u128::MAX / count + (u128::MAX % count + 1) / count)
}

/// The inclusive hash-key range of `shard` when the space is split evenly
/// into `shard_count` contiguous ranges. The last shard absorbs the remainder.
pub fn shard_hash_range(shard: u32, shard_count: u32) -> (u128, u128) {
    assert!(shard < shard_count, "shard {shard} out of {shard_count}");
    let Some(width) = range_width(shard_count) else {
        return (0, u128::MAX);
    };
    let start = width * u128::from(shard);
    let end = if shard + 1 == shard_count {
        u128::MAX
    } else {
        start + width - 1
    };
    (start, end)
}

/// The shard of `shard_count` whose range contains `hash_key`.
pub fn shard_for_hash_key(hash_key: u128, shard_count: u32) -> u32 {
    let Some(width) = range_width(shard_count) else {
        return 0;
    };
    let shard = hash_key / width;
    // Keys in the remainder past the last full width belong to the last shard.
    shard.min(u128::from(shard_count - 1)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_key_is_md5_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
        assert_eq!(shard_for("", Some(u128::MAX), 4), 3);
        assert_eq!(shard_for("", None, 4), 3);
    }

    #[test]
    fn ranges_tile_the_space_and_agree_with_lookup() {
        for count in [1u32, 2, 3, 4, 7, 16, 1000] {
            let mut next_start = 0u128;
            for shard in 0..count {
                let (start, end) = shard_hash_range(shard, count);
                assert_eq!(start, next_start, "gap before shard {shard} of {count}");
                assert!(end >= start);
                assert_eq!(shard_for_hash_key(start, count), shard);
                assert_eq!(shard_for_hash_key(end, count), shard);
                next_start = end.wrapping_add(1);
            }
            assert_eq!(shard_hash_range(count - 1, count).1, u128::MAX);
        }
        assert_eq!(shard_hash_range(1, 4), (1 << 126, (1 << 127) - 1));
    }
}
