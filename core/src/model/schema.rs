//! Names and encodings of everything stored in the document: item IDs, register paths and the
//! values kept in registers. Every value has a canonical fixed-width encoding (see
//! `docs/model.md`) decoded with the same capped `Reader` as the wire formats.

use core::fmt;
use core::str::FromStr;

use fractional_index::FractionalIndex;
use rand_core::CryptoRngCore;

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;

/// Longest title (of a bookmark, tab, visit, workspace or key), in bytes.
pub const MAX_TITLE_LEN: u16 = 4096;
/// Longest URL, in bytes.
pub const MAX_URL_LEN: u16 = 8192;
/// Longest sibling position, in bytes.
pub const MAX_POSITION_LEN: u8 = 255;

/// The stable ID of a bookmark node, password entry, workspace, key record or visit: 16 random
/// bytes, shown as 26 lower-case base32 characters. The bookmark roots have fixed IDs shown by
/// name (`toolbar`, `menu`, `other`, `mobile`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId([u8; 16]);

const ROOT_NAMES: [(&str, u8); 4] = [("toolbar", 1), ("menu", 2), ("other", 3), ("mobile", 4)];
const DELETED_PARENT: [u8; 16] = [0xff; 16];

impl ItemId {
    /// A fresh random ID.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        // Never collide with the reserved IDs (roots and the deleted marker).
        if bytes.get(..15) == Some(&[0u8; 15]) || bytes == DELETED_PARENT {
            bytes[0] = 0x5a;
        }
        Self(bytes)
    }

    /// The bookmark toolbar root.
    pub const TOOLBAR: ItemId = Self::root(1);
    /// The bookmarks menu root.
    pub const MENU: ItemId = Self::root(2);
    /// The "other bookmarks" root (where orphans are re-homed).
    pub const OTHER: ItemId = Self::root(3);
    /// The mobile bookmarks root.
    pub const MOBILE: ItemId = Self::root(4);
    /// The four roots, in display order.
    pub const ROOTS: [ItemId; 4] = [Self::TOOLBAR, Self::MENU, Self::OTHER, Self::MOBILE];
    /// The parent of a deleted node.
    pub(crate) const DELETED: ItemId = ItemId(DELETED_PARENT);
    /// The least and greatest IDs, for range queries.
    pub(crate) const MIN: ItemId = ItemId([0; 16]);
    pub(crate) const MAX: ItemId = ItemId([0xff; 16]);

    const fn root(n: u8) -> Self {
        let mut bytes = [0u8; 16];
        bytes[15] = n;
        Self(bytes)
    }

    /// Whether this is one of the four roots.
    pub fn is_root(&self) -> bool {
        // `root(1..=4)`: fifteen zero bytes and the root's number.
        matches!(self.0, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1..=4])
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub(crate) fn read(r: &mut Reader<'_>, what: &'static str) -> Result<Self, DecodeError> {
        Ok(Self(r.array(what)?))
    }
}

/// Characters in the text form of a non-root [`ItemId`].
const ITEM_ID_TEXT_LEN: usize = 26;

/// The text form of an [`ItemId`], on the stack: IDs are written into every register path, so
/// this is on the path of every edit.
struct ItemIdText {
    buf: [u8; ITEM_ID_TEXT_LEN],
    root: Option<&'static str>,
}

impl ItemIdText {
    fn as_str(&self) -> &str {
        match self.root {
            Some(name) => name,
            // Base32 output is ASCII; the fallback is unreachable.
            None => core::str::from_utf8(&self.buf).unwrap_or_default(),
        }
    }
}

impl ItemId {
    fn text(&self) -> ItemIdText {
        let mut buf = [0u8; ITEM_ID_TEXT_LEN];
        if let Some((name, _)) = ROOT_NAMES.iter().find(|(_, n)| *self == Self::root(*n)) {
            return ItemIdText { buf, root: Some(name) };
        }
        // 16 bytes are exactly 26 characters, the buffer's size: encoding cannot fail.
        let _ = crate::text::base32_lower_into(&self.0, &mut buf);
        ItemIdText { buf, root: None }
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl fmt::Debug for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ItemId({self})")
    }
}

/// A text item ID that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an item ID: {0:?}")]
pub struct ItemIdError(pub String);

impl FromStr for ItemId {
    type Err = ItemIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((_, n)) = ROOT_NAMES.iter().find(|(name, _)| *name == s) {
            return Ok(Self::root(*n));
        }
        let error = || ItemIdError(s.chars().take(40).collect());
        // Exactly 26 characters decode to exactly 16 bytes; either case is accepted.
        if s.len() != ITEM_ID_TEXT_LEN {
            return Err(error());
        }
        let mut bytes = [0u8; 16];
        crate::text::base32_decode_into(s.as_bytes(), &mut bytes).ok_or_else(error)?;
        Ok(Self(bytes))
    }
}

/// Register paths. Every register of one item shares the prefix `<kind>/<id>/`.
pub(crate) mod path {
    use super::ItemId;
    use crate::identity::DeviceId;

    /// `kind/id/field`, built without the formatting machinery (every edit builds several).
    fn item(kind: &str, id: &ItemId, field: &str) -> String {
        join(kind, id.text().as_str(), field)
    }

    fn join(kind: &str, id_text: &str, field: &str) -> String {
        let mut out = String::with_capacity(
            kind.len().saturating_add(id_text.len()).saturating_add(field.len()).saturating_add(2),
        );
        out.push_str(kind);
        out.push('/');
        out.push_str(id_text);
        out.push('/');
        out.push_str(field);
        out
    }

    pub(crate) fn bookmark(id: &ItemId, field: &str) -> String {
        item("b", id, field)
    }
    /// The paths of several fields of one bookmark, its ID's text made once (a bookmark add
    /// writes three registers and checks them first: the text was made six times).
    pub(crate) fn bookmark_fields<const N: usize>(id: &ItemId, fields: [&str; N]) -> [String; N] {
        let text = id.text();
        fields.map(|field| join("b", text.as_str(), field))
    }
    pub(crate) fn password(id: &ItemId, field: &str) -> String {
        item("p", id, field)
    }
    pub(crate) fn key(id: &ItemId, field: &str) -> String {
        item("k", id, field)
    }
    pub(crate) fn workspace(id: &ItemId, field: &str) -> String {
        item("w", id, field)
    }
    pub(crate) fn device_layout(device: &DeviceId) -> String {
        format!("d/{}/layout", crate::text::hex(device.as_bytes()))
    }

    /// Splits `kind/id/field`.
    pub(crate) fn split(path: &str) -> Option<(&str, &str, &str)> {
        let mut parts = path.splitn(3, '/');
        Some((parts.next()?, parts.next()?, parts.next()?))
    }
}

/// What a bookmark node is. Fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Holds other nodes.
    Folder,
    /// A URL with a title.
    Bookmark,
    /// A visual divider.
    Separator,
}

impl NodeKind {
    fn to_byte(self) -> u8 {
        match self {
            NodeKind::Folder => 1,
            NodeKind::Bookmark => 2,
            NodeKind::Separator => 3,
        }
    }

    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            1 => Ok(NodeKind::Folder),
            2 => Ok(NodeKind::Bookmark),
            3 => Ok(NodeKind::Separator),
            tag => Err(DecodeError::UnknownTag { what: "node kind", tag }),
        }
    }
}

/// A sibling position: a fractional index, compared bytewise (ties broken by node ID).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Position(Vec<u8>);

impl Position {
    /// The first position ever used in an empty folder.
    pub fn first() -> Self {
        Self(FractionalIndex::default().as_bytes().to_vec())
    }

    /// A position strictly between `before` and `after` (either may be absent), or `None` when it
    /// would be longer than [`MAX_POSITION_LEN`]. Positions grow by about a byte every 125 inserts
    /// at the same end or the same spot of a folder, so that is ~32,000 of them.
    pub fn between(before: Option<&Position>, after: Option<&Position>) -> Option<Self> {
        let parse = |p: &Position| FractionalIndex::from_bytes(p.0.clone()).ok();
        let index = match (before.and_then(parse), after.and_then(parse)) {
            (Some(b), Some(a)) if b < a => {
                FractionalIndex::new_between(&b, &a).unwrap_or_else(|| FractionalIndex::new_after(&b))
            }
            (Some(b), _) => FractionalIndex::new_after(&b),
            (None, Some(a)) => FractionalIndex::new_before(&a),
            (None, None) => FractionalIndex::default(),
        };
        let bytes = index.as_bytes();
        // Past the cap a position could not be written whole (its length is one byte).
        (bytes.len() <= usize::from(MAX_POSITION_LEN)).then(|| Self(bytes.to_vec()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn read(r: &mut Reader<'_>, what: &'static str) -> Result<Self, DecodeError> {
        let bytes = r.bytes_u8(MAX_POSITION_LEN, what)?.to_vec();
        FractionalIndex::from_bytes(bytes.clone())
            .map_err(|_| DecodeError::NonCanonical { what, reason: "not a fractional index" })?;
        Ok(Self(bytes))
    }
}

/// The `place` register of a bookmark node: its kind, where it is, and where it was before this
/// write (so a move that would close a cycle can be undone, and a revived node knows its home).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) kind: NodeKind,
    /// The parent, or [`ItemId::DELETED`].
    pub(crate) parent: ItemId,
    pub(crate) position: Position,
    pub(crate) prev_parent: ItemId,
    pub(crate) prev_position: Position,
}

impl Place {
    pub(crate) fn is_deleted(&self) -> bool {
        self.parent == ItemId::DELETED
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Exactly: the register value keeps these bytes in a box of their size.
        let mut w =
            Writer::with_capacity(self.position.0.len().saturating_add(self.prev_position.0.len()).saturating_add(35));
        w.u8(self.kind.to_byte())
            .raw(self.parent.as_bytes())
            .bytes_u8(&self.position.0)
            .raw(self.prev_parent.as_bytes())
            .bytes_u8(&self.prev_position.0);
        w.into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let kind = NodeKind::from_byte(r.u8("node kind")?)?;
        let parent = ItemId::read(&mut r, "node parent")?;
        let position = Position::read(&mut r, "node position")?;
        let prev_parent = ItemId::read(&mut r, "node previous parent")?;
        let prev_position = Position::read(&mut r, "node previous position")?;
        r.finish("node place")?;
        Ok(Self { kind, parent, position, prev_parent, prev_position })
    }
}

/// A text register value (title, URL, origin, username, name).
pub(crate) fn encode_text(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

pub(crate) fn decode_text(bytes: &[u8], max: u16, what: &'static str) -> Result<String, DecodeError> {
    if bytes.len() > usize::from(max) {
        return Err(DecodeError::TooLarge { what, len: bytes.len() as u64, max: max.into() });
    }
    core::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::InvalidUtf8 { what })
}

/// The `state` register of an entry (password, workspace, key record): live or deleted.
pub(crate) const STATE_LIVE: &[u8] = &[1];
pub(crate) const STATE_DELETED: &[u8] = &[2];

/// A `u64` register value (a creation time).
pub(crate) fn encode_u64(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

pub(crate) fn decode_u64(bytes: &[u8], what: &'static str) -> Result<u64, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = r.u64(what)?;
    r.finish(what)?;
    Ok(v)
}

/// Checks a title or URL given by the app before it is written.
pub(crate) fn check_text(text: &str, max: u16, what: &'static str) -> Result<(), DecodeError> {
    if text.len() > usize::from(max) {
        return Err(DecodeError::TooLarge { what, len: text.len() as u64, max: max.into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;

    use super::*;

    #[test]
    fn item_ids_round_trip_through_text_in_either_case_and_nothing_else_parses() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        for _ in 0..2_000 {
            let id = ItemId::random(&mut rng);
            let text = id.to_string();
            assert_eq!(text.len(), ITEM_ID_TEXT_LEN);
            assert_eq!(text, crate::text::base32_upper(id.as_bytes()).to_ascii_lowercase());
            assert_eq!(text.parse::<ItemId>(), Ok(id));
            assert_eq!(text.to_ascii_uppercase().parse::<ItemId>(), Ok(id));
            assert_eq!(path::bookmark(&id, "title"), format!("b/{text}/title"));
            assert_eq!(path::password(&id, "site"), format!("p/{text}/site"));
        }
        for (root, name) in ItemId::ROOTS.iter().zip(["toolbar", "menu", "other", "mobile"]) {
            assert_eq!(root.to_string(), name);
            assert_eq!(name.parse::<ItemId>(), Ok(*root));
            assert_eq!(path::bookmark(root, "place"), format!("b/{name}/place"));
        }
        let good = ItemId::random(&mut rng).to_string();
        let refused = [
            String::new(),
            good[..25].to_owned(),
            format!("{good}a"),
            good.replacen(|c: char| c.is_ascii_alphanumeric(), "1", 1), // '1' is not base32
            good.replacen(|c: char| c.is_ascii_alphanumeric(), "é", 1),
            // The last character carries 3 bits and 2 must be zero: 'b' sets one of them.
            format!("{}b", &"a".repeat(25)),
        ];
        for text in refused {
            assert!(text.parse::<ItemId>().is_err(), "{text:?} parsed");
        }
    }
}
