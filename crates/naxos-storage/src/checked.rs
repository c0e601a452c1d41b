//! JSON metadata files with a checksum: `meta.json` and `format.json` here,
//! and the server's `layout.json`, `acceptor.json` and `sequencer.json`. A
//! flipped byte that leaves valid JSON (a digit of the trim mark, of an
//! epoch, of a ceiling) would otherwise be believed; with the checksum it is
//! refused. The file stays plain, pretty-printed JSON: its last member is
//! `"crc32c"`, the CRC32C of every byte before the `,` that introduces it.
//! Files written before carry no such member and are read as they are (a
//! flip that breaks the member's own framing leaves the rest intact, so it
//! is read that way too).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What introduces the checksum member (pretty-printed, two-space indent).
const MARKER: &[u8] = b",\n  \"crc32c\": ";

/// `value` (serialized as a JSON object) as file bytes, checksum last.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let pretty = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    let Some(head) = pretty.strip_suffix(b"\n}") else {
        return Err("only a non-empty JSON object can carry a checksum".into());
    };
    let crc = crc32c::crc32c(head);
    let mut out = Vec::with_capacity(pretty.len() + 32);
    out.extend_from_slice(head);
    out.extend_from_slice(MARKER);
    out.extend_from_slice(crc.to_string().as_bytes());
    out.extend_from_slice(b"\n}\n");
    Ok(out)
}

/// The value in `bytes`, after checking its checksum (if it has one).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if let Some(at) = bytes.windows(MARKER.len()).rposition(|w| w == MARKER) {
        let digits: Vec<u8> = bytes[at + MARKER.len()..].iter().copied().take_while(u8::is_ascii_digit).collect();
        let stored = std::str::from_utf8(&digits).ok().and_then(|d| d.parse::<u32>().ok());
        let computed = crc32c::crc32c(&bytes[..at]);
        if stored != Some(computed) {
            return Err(format!(
                "its checksum does not match its content (stored {}, computed {computed}): the file is damaged",
                stored.map_or_else(|| "none".to_string(), |s| s.to_string())
            ));
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if let Some(object) = value.as_object_mut() {
        object.remove("crc32c");
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct M {
        trim_mark: u64,
        name: String,
    }

    #[test]
    fn a_checked_file_round_trips_and_any_flipped_byte_of_its_content_is_refused() {
        let m = M { trim_mark: 1234, name: "n".into() };
        let bytes = encode(&m).unwrap();
        assert_eq!(decode::<M>(&bytes).unwrap(), m);
        let at = bytes.windows(4).position(|w| w == b"1234").unwrap();
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[at + 1] ^= 1 << bit;
            assert!(decode::<M>(&flipped).is_err(), "bit {bit} of a digit flipped went unnoticed");
        }
        // Every single-byte change is refused or leaves the content as it was.
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x04;
            if let Ok(read) = decode::<M>(&flipped) {
                assert_eq!(read, m, "byte {i} changed the content unnoticed");
            }
        }
        // A file from before the checksum reads as it is.
        assert_eq!(decode::<M>(&serde_json::to_vec_pretty(&m).unwrap()).unwrap(), m);
    }
}
