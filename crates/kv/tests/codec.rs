//! The binary form of commands and responses: round trips, and bad bytes
//! are refused without a panic.

use kv::codec::{COMMAND_FORMAT, MAX_NESTING};
use kv::*;
use proptest::prelude::*;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    // NUL bytes and non-UTF-8 included.
    prop::collection::vec(any::<u8>(), 0..12)
}

fn kv_strategy() -> impl Strategy<Value = KeyValue> {
    (
        bytes(),
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
        bytes(),
        any::<i64>(),
    )
        .prop_map(
            |(key, create_revision, mod_revision, version, value, lease)| KeyValue {
                key,
                create_revision,
                mod_revision,
                version,
                value,
                lease,
            },
        )
}

fn range_strategy() -> impl Strategy<Value = RangeRequest> {
    (
        (bytes(), bytes(), any::<i64>(), any::<i64>(), 0..3u8, 0..5u8),
        (any::<[bool; 3]>(), any::<[i64; 4]>()),
    )
        .prop_map(
            |((key, range_end, limit, revision, order, target), (flags, f))| RangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend]
                    [order as usize],
                sort_target: [
                    SortTarget::Key,
                    SortTarget::Version,
                    SortTarget::Create,
                    SortTarget::Mod,
                    SortTarget::Value,
                ][target as usize],
                serializable: flags[0],
                keys_only: flags[1],
                count_only: flags[2],
                min_mod_revision: f[0],
                max_mod_revision: f[1],
                min_create_revision: f[2],
                max_create_revision: f[3],
            },
        )
}

fn put_strategy() -> impl Strategy<Value = PutRequest> {
    (bytes(), bytes(), any::<i64>(), any::<[bool; 3]>()).prop_map(|(key, value, lease, f)| {
        PutRequest {
            key,
            value,
            lease,
            prev_kv: f[0],
            ignore_value: f[1],
            ignore_lease: f[2],
        }
    })
}

fn delete_strategy() -> impl Strategy<Value = DeleteRangeRequest> {
    (bytes(), bytes(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare_strategy() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        any::<i64>().prop_map(CompareTarget::Version),
        any::<i64>().prop_map(CompareTarget::CreateRevision),
        any::<i64>().prop_map(CompareTarget::ModRevision),
        bytes().prop_map(CompareTarget::Value),
        any::<i64>().prop_map(CompareTarget::Lease),
    ];
    let result = prop_oneof![
        Just(CompareResult::Equal),
        Just(CompareResult::Greater),
        Just(CompareResult::Less),
        Just(CompareResult::NotEqual),
    ];
    (result, target, bytes(), bytes()).prop_map(|(result, target, key, range_end)| Compare {
        result,
        target,
        key,
        range_end,
    })
}

fn txn_strategy() -> impl Strategy<Value = TxnRequest> {
    let leaf = prop_oneof![
        range_strategy().prop_map(RequestOp::Range),
        put_strategy().prop_map(RequestOp::Put),
        delete_strategy().prop_map(RequestOp::DeleteRange),
    ];
    let op = leaf.prop_recursive(3, 24, 4, |inner| {
        (
            prop::collection::vec(compare_strategy(), 0..3),
            prop::collection::vec(inner.clone(), 0..4),
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|(compare, success, failure)| {
                RequestOp::Txn(TxnRequest {
                    compare,
                    success,
                    failure,
                })
            })
    });
    (
        prop::collection::vec(compare_strategy(), 0..3),
        prop::collection::vec(op.clone(), 0..4),
        prop::collection::vec(op, 0..4),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

fn command_strategy() -> impl Strategy<Value = Command> {
    prop_oneof![
        put_strategy().prop_map(Command::Put),
        delete_strategy().prop_map(Command::DeleteRange),
        txn_strategy().prop_map(Command::Txn),
        (any::<i64>(), any::<bool>()).prop_map(|(revision, physical)| Command::Compact(
            CompactionRequest { revision, physical }
        )),
        (any::<i64>(), any::<i64>())
            .prop_map(|(ttl, id)| Command::LeaseGrant(LeaseGrantRequest { ttl, id })),
        any::<i64>().prop_map(|id| Command::LeaseRevoke(LeaseRevokeRequest { id })),
        any::<i64>().prop_map(|id| Command::LeaseKeepAlive(LeaseKeepAliveRequest { id })),
        prop::collection::vec(any::<i64>(), 0..5)
            .prop_map(|ids| Command::LeaseExpire(LeaseExpireRequest { ids })),
        Just(Command::LeaseRenewAll),
    ]
}

fn header() -> impl Strategy<Value = ResponseHeader> {
    any::<i64>().prop_map(|revision| ResponseHeader { revision })
}

fn range_response() -> impl Strategy<Value = RangeResponse> {
    (
        header(),
        prop::collection::vec(kv_strategy(), 0..3),
        any::<bool>(),
        any::<i64>(),
    )
        .prop_map(|(header, kvs, more, count)| RangeResponse {
            header,
            kvs,
            more,
            count,
        })
}

fn response_strategy() -> impl Strategy<Value = Response> {
    let put = || {
        (header(), prop::option::of(kv_strategy()))
            .prop_map(|(header, prev_kv)| PutResponse { header, prev_kv })
    };
    let del = || {
        (
            header(),
            any::<i64>(),
            prop::collection::vec(kv_strategy(), 0..3),
        )
            .prop_map(|(header, deleted, prev_kvs)| DeleteRangeResponse {
                header,
                deleted,
                prev_kvs,
            })
    };
    let op = prop_oneof![
        range_response().prop_map(ResponseOp::Range),
        put().prop_map(ResponseOp::Put),
        del().prop_map(ResponseOp::DeleteRange),
    ]
    .prop_recursive(2, 12, 3, |inner| {
        (header(), any::<bool>(), prop::collection::vec(inner, 0..3)).prop_map(
            |(header, succeeded, responses)| {
                ResponseOp::Txn(TxnResponse {
                    header,
                    succeeded,
                    responses,
                })
            },
        )
    });
    prop_oneof![
        put().prop_map(Response::Put),
        del().prop_map(Response::DeleteRange),
        (header(), any::<bool>(), prop::collection::vec(op, 0..3)).prop_map(
            |(header, succeeded, responses)| Response::Txn(TxnResponse {
                header,
                succeeded,
                responses
            })
        ),
        header().prop_map(|header| Response::Compact(CompactionResponse { header })),
        (header(), any::<i64>(), any::<i64>()).prop_map(|(header, id, ttl)| Response::LeaseGrant(
            LeaseGrantResponse {
                header,
                id,
                ttl,
                error: String::new()
            }
        )),
        header().prop_map(|header| Response::LeaseRevoke(LeaseRevokeResponse { header })),
        (header(), any::<i64>(), any::<i64>()).prop_map(|(header, id, ttl)| {
            Response::LeaseKeepAlive(LeaseKeepAliveResponse { header, id, ttl })
        }),
        (header(), prop::collection::vec(any::<i64>(), 0..4)).prop_map(|(header, revoked)| {
            Response::LeaseExpire(LeaseExpireResponse { header, revoked })
        }),
        (header(), any::<u64>()).prop_map(|(header, renewed)| Response::LeaseRenewAll(
            LeaseRenewAllResponse { header, renewed }
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn command_round_trips(cmd in command_strategy()) {
        let bytes = cmd.encode();
        prop_assert_eq!(bytes[0], COMMAND_FORMAT);
        prop_assert_eq!(bytes.len(), cmd.encoded_len());
        prop_assert_eq!(Command::decode(&bytes), Ok(cmd));
    }

    #[test]
    fn response_round_trips(resp in response_strategy()) {
        prop_assert_eq!(Response::decode(&resp.encode()), Ok(resp));
    }

    #[test]
    fn every_strict_prefix_of_a_command_is_refused(cmd in command_strategy()) {
        let bytes = cmd.encode();
        for cut in 0..bytes.len() {
            prop_assert!(Command::decode(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(Command::decode(&longer).is_err());
    }

    #[test]
    fn garbage_never_panics(mut bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = Command::decode(&bytes);
        let _ = Response::decode(&bytes);
        if let Some(first) = bytes.first_mut() {
            *first = COMMAND_FORMAT;
        }
        let _ = Command::decode(&bytes);
        let _ = Response::decode(&bytes);
    }

    #[test]
    fn flipped_bytes_never_panic(cmd in command_strategy(), at in any::<usize>(), bit in 0..8u8) {
        let mut bytes = cmd.encode();
        let i = at % bytes.len();
        bytes[i] ^= 1 << bit;
        let _ = Command::decode(&bytes);
    }
}

#[test]
fn forged_lengths_allocate_nothing_and_fail() {
    // Put with a key length of 2^62.
    let mut bytes = vec![COMMAND_FORMAT, 1];
    bytes.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
    assert!(matches!(
        Command::decode(&bytes),
        Err(DecodeError::LengthOutOfRange(_))
    ));
    // A varint of 11 bytes.
    let mut bytes = vec![COMMAND_FORMAT, 6];
    bytes.extend_from_slice(&[0xff; 11]);
    assert_eq!(Command::decode(&bytes), Err(DecodeError::VarintOverflow));
    assert_eq!(
        Command::decode(&[9, 1]),
        Err(DecodeError::UnsupportedFormat(9))
    );
    assert_eq!(
        Command::decode(&[COMMAND_FORMAT, 77]),
        Err(DecodeError::UnknownTag {
            what: "command",
            tag: 77
        })
    );
    assert_eq!(Command::decode(&[]), Err(DecodeError::Truncated));
}

#[test]
fn nesting_is_bounded() {
    let mut txn = TxnRequest::default();
    for _ in 0..MAX_NESTING + 5 {
        txn = TxnRequest {
            success: vec![RequestOp::Txn(txn)],
            ..TxnRequest::default()
        };
    }
    let bytes = Command::Txn(txn).encode();
    assert_eq!(Command::decode(&bytes), Err(DecodeError::TooDeep));
}
