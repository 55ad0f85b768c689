//! HPACK decoder tests: RFC 7541 Appendix C is the ground truth; then the
//! observer's own cases (unknown state, secrets, bounds).

use super::*;
use crate::redact::fingerprint_key;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn fields(b: &Block) -> Vec<(&str, &str)> {
    b.fields
        .iter()
        .map(|f| (f.name.as_str(), f.value.as_str()))
        .collect()
}

fn table(d: &Decoder) -> Vec<(&str, &str)> {
    d.table
        .iter()
        .map(|e| {
            let f = e.field.as_ref().unwrap();
            (f.name.as_str(), f.value.as_str())
        })
        .collect()
}

const BIG: usize = 1 << 20;

/// C.3 (plain strings) and C.4 (Huffman) decode the same three requests.
#[test]
fn rfc_c3_and_c4_requests() {
    let c3 = [
        "828684410f7777772e6578616d706c652e636f6d",
        "828684be58086e6f2d6361636865",
        "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
    ];
    let c4 = [
        "828684418cf1e3c2e5f23a6ba0ab90f4ff",
        "828684be5886a8eb10649cbf",
        "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
    ];
    for blocks in [c3, c4] {
        let mut d = Decoder::new(true);
        let b = d.decode(&hex(blocks[0]), BIG).unwrap();
        assert_eq!(
            fields(&b),
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ]
        );
        assert_eq!(d.held(), 57);
        let b = d.decode(&hex(blocks[1]), BIG).unwrap();
        assert_eq!(b.fields.len(), 5);
        assert_eq!(fields(&b)[4], ("cache-control", "no-cache"));
        assert_eq!(d.held(), 110);
        let b = d.decode(&hex(blocks[2]), BIG).unwrap();
        assert_eq!(
            fields(&b),
            [
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ]
        );
        assert_eq!(
            table(&d),
            [
                ("custom-key", "custom-value"),
                ("cache-control", "no-cache"),
                (":authority", "www.example.com")
            ]
        );
        assert_eq!(d.held(), 164);
        assert_eq!(b.unknown, 0);
    }
}

/// C.5 (plain) and C.6 (Huffman): a 256-octet table, with evictions.
/// The `set-cookie` value is redacted in the decoded list and the table,
/// but counts for its real size.
#[test]
fn rfc_c5_and_c6_responses_with_eviction() {
    let c5 = [
        "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d",
        "4803333037c1c0bf",
        "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076657273696f6e3d31",
    ];
    let c6 = [
        "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
        "4883640effc1c0bf",
        "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
    ];
    for blocks in [c5, c6] {
        let mut d = Decoder::new(true).with_max_size(256);
        let b = d.decode(&hex(blocks[0]), BIG).unwrap();
        assert_eq!(
            fields(&b),
            [
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ]
        );
        assert_eq!(d.held(), 222);
        // `:status: 307` evicts `:status: 302`.
        let b = d.decode(&hex(blocks[1]), BIG).unwrap();
        assert_eq!(fields(&b)[0], (":status", "307"));
        assert_eq!(fields(&b)[3], ("location", "https://www.example.com"));
        assert_eq!(
            table(&d),
            [
                (":status", "307"),
                ("location", "https://www.example.com"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("cache-control", "private")
            ]
        );
        assert_eq!(d.held(), 222);
        let b = d.decode(&hex(blocks[2]), BIG).unwrap();
        assert_eq!(
            fields(&b),
            [
                (":status", "200"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                ("location", "https://www.example.com"),
                ("content-encoding", "gzip"),
                ("set-cookie", "[redacted]")
            ]
        );
        assert_eq!(
            table(&d),
            [
                ("set-cookie", "[redacted]"),
                ("content-encoding", "gzip"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT")
            ]
        );
        assert_eq!(d.held(), 215);
    }
}

/// Picked up mid-way: a reference past the entries we saw inserted is
/// unknown, not an error, and entries inserted since are right.
#[test]
fn unknown_state_marks_fields_unknown() {
    let c3 = [
        "828684410f7777772e6578616d706c652e636f6d",
        "828684be58086e6f2d6361636865",
        "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
    ];
    // We missed the first request: `be` (62) in the second is unknown.
    let mut d = Decoder::new(false);
    let b = d.decode(&hex(c3[1]), BIG).unwrap();
    assert_eq!(b.unknown, 1);
    assert_eq!(
        fields(&b),
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("cache-control", "no-cache")
        ]
    );
    // In the third, 63 (`cache-control`, inserted since) is known; 64 is
    // the missed `:authority` again.
    let b = d.decode(&hex(c3[2]), BIG).unwrap();
    assert_eq!(b.unknown, 1);
    assert_eq!(fields(&b)[3], ("custom-key", "custom-value"));
    assert!(!d.is_known());
    // With the start seen, the same index past the table is an error.
    let mut d = Decoder::new(true);
    assert_eq!(
        d.decode(&hex(c3[1]), BIG),
        Err(HpackError::BadIndex { index: 62 })
    );
    // ... after which the state is unknown rather than wrong.
    assert!(!d.is_known());
}

/// A literal whose name is an entry we do not have is dropped value and
/// all (it could be a credential), but still takes its table slot.
#[test]
fn unknown_name_literal_is_dropped_and_keeps_its_slot() {
    let mut d = Decoder::new(false);
    // 0x7e: incremental indexing, name index 62 (unknown), value "secret".
    let mut block = vec![0x7e, 6];
    block.extend_from_slice(b"secret");
    // Then index 62 again: the entry just inserted, still unknown.
    block.push(0xbe);
    let b = d.decode(&block, BIG).unwrap();
    assert_eq!(b.unknown, 2);
    assert!(b.fields.is_empty());
    assert!(!format!("{d:?}").contains("secret"));
}

/// A size update to zero empties the peer's table too: known again.
#[test]
fn size_update_to_zero_makes_the_state_known() {
    let mut d = Decoder::new(false);
    d.decode(&[0x20, 0x3f, 0xe1, 0x1f], BIG).unwrap();
    assert!(d.is_known());
    // A size above the cap is clamped, and the state becomes unknown.
    d.decode(&[0x3f, 0xe1, 0xff, 0x07], BIG).unwrap();
    assert!(!d.is_known());
    assert_eq!(d.max_size, MAX_TABLE_SIZE);
}

/// Credentials are fingerprinted, in the list and in the table, whether
/// indexed or not.
#[test]
fn credentials_are_fingerprinted_in_table_and_list() {
    let key = "sk-proj-Zx81QmA7cYbT0nKe4WvLr2Hs9DgUfPj6oBiN3tEa5yCqRw1M";
    let value = format!("Bearer {key}");
    // Literal with incremental indexing, static name 23 (authorization).
    let mut block = vec![0x57, u8::try_from(value.len()).unwrap()];
    block.extend_from_slice(value.as_bytes());
    // Then the same field by index.
    block.push(0xbe);
    let mut d = Decoder::new(true);
    let b = d.decode(&block, BIG).unwrap();
    let fp = fingerprint_key(key);
    assert_eq!(
        fields(&b),
        [
            ("authorization", fp.as_str()),
            ("authorization", fp.as_str())
        ]
    );
    assert!(!format!("{d:?}{b:?}").contains(key));
    // The table counts the real octets.
    assert_eq!(d.held(), "authorization".len() + value.len() + 32);
}

#[test]
fn hostile_blocks_are_errors() {
    let cases: [(&[u8], HpackError); 5] = [
        (&[0x80], HpackError::BadIndex { index: 0 }),
        (
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            HpackError::IntegerOverflow,
        ),
        (&[0x40, 0x05, b'a'], HpackError::Truncated),
        (&[0x40, 0x7f, 0xff, 0xff, 0xff, 0x0f], HpackError::Truncated),
        (
            &[0x00, 0x81, 0xff, 0x00],
            HpackError::Huffman(HuffmanError::BadPadding),
        ),
    ];
    for (block, want) in cases {
        assert_eq!(
            Decoder::new(true).decode(block, BIG),
            Err(want),
            "{block:x?}"
        );
    }
}

#[test]
fn list_bound_drops_fields_but_keeps_the_table() {
    let mut d = Decoder::new(true);
    let b = d
        .decode(&hex("828684410f7777772e6578616d706c652e636f6d"), 100)
        .unwrap();
    assert!(b.too_large);
    assert!(b.fields.len() < 4);
    assert_eq!(d.held(), 57);
}

proptest::proptest! {
    /// Any bytes: an error or a block, never a panic, the table bounded.
    #[test]
    fn decoding_is_total(blocks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..8)) {
        let mut d = Decoder::new(false);
        for b in &blocks {
            let _ = d.decode(b, 4096);
            proptest::prop_assert!(d.held() <= MAX_TABLE_SIZE);
        }
    }
}
