//! Import and export in the formats people already have: the Netscape bookmark file every
//! browser exports, Chromium's `Bookmarks` JSON, and password CSV as Chrome, Firefox and
//! Bitwarden write it.
//!
//! Every format is read into, and written from, one neutral form: [`BookmarkFile`] for bookmarks
//! and [`PasswordRow`]s for passwords. Parsing and writing are pure functions of that form, which
//! is what lets the browser package keep them in a second `.wasm` loaded on first use: the form
//! crosses between the two modules in the compact encoding [`BookmarkFile::encode`] and
//! [`encode_password_rows`] define, decoded with hard caps like any other untrusted bytes.
//!
//! Imports parse the **whole** file first; a malformed file gives an error with its line (and
//! column or record) and changes nothing. Applying is idempotent: a folder with the same title
//! under the same parent is reused, a bookmark with the same title and URL in the same folder is
//! skipped, a password entry with the same origin and user name is updated only if the password
//! differs — so importing a file twice adds nothing the second time.

use std::collections::BTreeMap;

use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;
use crate::model::bookmarks::BookmarkTree;
use crate::model::schema::{ItemId, NodeKind, Position};
use crate::model::{BrowserState, Edit, ModelError};

/// A file that could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Malformed at a place in the file.
    #[error("{format}, line {line}, column {column}: {message}")]
    Malformed {
        /// Which format was being read.
        format: &'static str,
        /// 1-based line.
        line: usize,
        /// 1-based column (0 where only the line is known).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A CSV header that matches none of the known layouts.
    #[error("unrecognised password CSV header {0:?}: expected the Chrome, Firefox or Bitwarden layout")]
    UnknownCsvLayout(String),
    /// The change could not be made.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    /// Folders created.
    pub folders_added: usize,
    /// Bookmarks and separators created.
    pub bookmarks_added: usize,
    /// Password entries created.
    pub passwords_added: usize,
    /// Password entries whose password changed.
    pub passwords_updated: usize,
    /// Items already present, skipped.
    pub duplicates_skipped: usize,
}

/// A node of a [`BookmarkFile`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileNode {
    /// A folder and its children.
    Folder {
        /// Title.
        title: String,
        /// Children in order.
        children: Vec<FileNode>,
    },
    /// A bookmark.
    Bookmark {
        /// Title.
        title: String,
        /// URL.
        url: String,
    },
    /// A separator.
    Separator,
}

/// Bookmarks as a bookmark file carries them: what an import reads (before it touches the
/// replica) and what an export writes. Titles, URLs and nesting only; no IDs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BookmarkFile {
    /// `(root, children)` pairs; every root is one of [`ItemId::ROOTS`].
    pub roots: Vec<(ItemId, Vec<FileNode>)>,
}

/// Format byte of an encoded [`BookmarkFile`].
const BOOKMARK_FILE_FORMAT: u8 = 0xb1;
/// Format byte of encoded [`PasswordRow`]s.
const PASSWORD_ROWS_FORMAT: u8 = 0xc1;
/// Longest string in either encoding: no file holds more.
const MAX_FILE_STRING: u32 = MAX_IMPORT_LEN as u32;
/// Deepest folder an export writes (a root's children are at depth 1), so that every export
/// parses back: the Netscape file nests the toolbar's list one level deeper than its folders,
/// and Chromium's file nests the menu inside a "Bookmarks menu" folder while its JSON takes two
/// containers per folder (an object and its `children` array) under a reader's limit of 128.
pub const MAX_EXPORT_DEPTH: usize = MAX_DEPTH - 3;
/// Most nodes an encoded [`BookmarkFile`] may hold (folders, bookmarks and separators): 200
/// times a large real profile, and a bound on what decoding it may allocate.
pub const MAX_FILE_NODES: u64 = 1_000_000;
const FOLDER: u8 = 0;
const BOOKMARK: u8 = 1;
const SEPARATOR: u8 = 2;

impl BookmarkFile {
    /// The replica's bookmarks in this form, every root in [`ItemId::ROOTS`] order. Folders
    /// nested deeper than [`MAX_EXPORT_DEPTH`] are written empty, so that every export parses
    /// back with the importers' 64-level cap.
    pub fn from_tree(tree: &BookmarkTree) -> Self {
        fn nodes(tree: &BookmarkTree, parent: &ItemId, depth: usize) -> Vec<FileNode> {
            let node = |id: &ItemId| {
                let n = tree.get(id)?;
                Some(match n.kind {
                    NodeKind::Folder => FileNode::Folder {
                        title: n.title.clone(),
                        children: if depth < MAX_EXPORT_DEPTH {
                            nodes(tree, id, depth.saturating_add(1))
                        } else {
                            Vec::new()
                        },
                    },
                    NodeKind::Bookmark => {
                        FileNode::Bookmark { title: n.title.clone(), url: n.url.clone().unwrap_or_default() }
                    }
                    NodeKind::Separator => FileNode::Separator,
                })
            };
            tree.children(parent).iter().filter_map(node).collect()
        }
        Self { roots: ItemId::ROOTS.iter().map(|root| (*root, nodes(tree, root, 1))).collect() }
    }

    /// The children of `root` (none if the file has no such root).
    pub fn children(&self, root: &ItemId) -> &[FileNode] {
        self.roots.iter().find(|(r, _)| r == root).map(|(_, c)| c.as_slice()).unwrap_or_default()
    }

    /// The encoding that carries this form between the package's two `.wasm` modules: format
    /// byte `0xb1`, a `u8` root count, and per root its 16-byte ID and its node list. A node list
    /// is a `u32` count of nodes, each a kind byte (0 folder, 1 bookmark, 2 separator) followed
    /// by a folder's `u32`-prefixed title and node list, or a bookmark's title and URL.
    pub fn encode(&self) -> Vec<u8> {
        fn nodes(w: &mut Writer, list: &[FileNode]) {
            w.u32(u32::try_from(list.len()).unwrap_or(u32::MAX));
            for node in list {
                match node {
                    FileNode::Folder { title, children } => {
                        w.u8(FOLDER).bytes_u32(title.as_bytes());
                        nodes(w, children);
                    }
                    FileNode::Bookmark { title, url } => {
                        w.u8(BOOKMARK).bytes_u32(title.as_bytes()).bytes_u32(url.as_bytes());
                    }
                    FileNode::Separator => {
                        w.u8(SEPARATOR);
                    }
                }
            }
        }
        let mut w = Writer::default();
        w.u8(BOOKMARK_FILE_FORMAT).u8(u8::try_from(self.roots.len()).unwrap_or(u8::MAX));
        for (root, children) in &self.roots {
            w.raw(root.as_bytes());
            nodes(&mut w, children);
        }
        w.into_bytes()
    }

    /// Decodes [`BookmarkFile::encode`]'s bytes, refusing unknown roots, nesting deeper than
    /// the importers accept (64), more than [`MAX_FILE_NODES`] nodes, and any count or length
    /// beyond the bytes given.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        fn string(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
            let bytes = r.bytes_u32(MAX_FILE_STRING, what)?;
            core::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::InvalidUtf8 { what })
        }
        // `left`: how many more nodes the whole file may hold.
        fn nodes(r: &mut Reader<'_>, depth: usize, left: &mut u64) -> Result<Vec<FileNode>, DecodeError> {
            if depth > MAX_DEPTH {
                return Err(DecodeError::TooLarge {
                    what: "bookmark file nesting",
                    len: depth as u64,
                    max: MAX_DEPTH as u64,
                });
            }
            // Every node takes at least its kind byte, so the count cannot exceed what is left
            // of the input; and the file's nodes are capped in all (a node is ~50 bytes here
            // and may be one byte there).
            let count = r.u32("bookmark file node count")?;
            let count = r.check_len(count.into(), *left, "bookmark file node count")?;
            *left = left.saturating_sub(count as u64);
            let mut list = Vec::new();
            for _ in 0..count {
                list.push(match r.u8("bookmark file node kind")? {
                    FOLDER => FileNode::Folder {
                        title: string(r, "bookmark file folder title")?,
                        children: nodes(r, depth.saturating_add(1), left)?,
                    },
                    BOOKMARK => FileNode::Bookmark {
                        title: string(r, "bookmark file title")?,
                        url: string(r, "bookmark file URL")?,
                    },
                    SEPARATOR => FileNode::Separator,
                    tag => return Err(DecodeError::UnknownTag { what: "bookmark file node kind", tag }),
                });
            }
            Ok(list)
        }
        let mut r = Reader::new(bytes);
        r.format("bookmark file", BOOKMARK_FILE_FORMAT)?;
        let count = r.u8("bookmark file root count")?;
        let mut left = MAX_FILE_NODES;
        let mut roots = Vec::new();
        for _ in 0..count {
            let root = ItemId::from_bytes(r.array("bookmark file root")?);
            if !ItemId::ROOTS.contains(&root) {
                return Err(DecodeError::NonCanonical { what: "bookmark file root", reason: "not a bookmark root" });
            }
            roots.push((root, nodes(&mut r, 1, &mut left)?));
        }
        r.finish("bookmark file")?;
        Ok(Self { roots })
    }

    /// Number of bookmarks (not folders or separators).
    pub fn bookmark_count(&self) -> usize {
        fn count(nodes: &[FileNode]) -> usize {
            nodes
                .iter()
                .map(|n| match n {
                    FileNode::Bookmark { .. } => 1,
                    FileNode::Folder { children, .. } => count(children),
                    FileNode::Separator => 0,
                })
                .sum()
        }
        self.roots.iter().map(|(_, c)| count(c)).sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Netscape bookmark file
// ---------------------------------------------------------------------------------------------

/// Deepest folder nesting accepted.
const MAX_DEPTH: usize = 64;
/// Largest import file (64 MiB).
pub const MAX_IMPORT_LEN: usize = 64 << 20;

struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

#[derive(Debug)]
enum Piece<'a> {
    /// A tag: lower-case name, whether it closes, its raw attribute text, and where it starts.
    Tag { name: String, closing: bool, attrs: &'a str, at: usize },
    /// Text between tags.
    Text(&'a str),
}

impl<'a> Scanner<'a> {
    fn line_col(&self, at: usize) -> (usize, usize) {
        let before = self.text.get(..at).unwrap_or(self.text);
        let line = before.matches('\n').count().saturating_add(1);
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()).saturating_add(1);
        (line, column)
    }

    fn error(&self, at: usize, message: impl Into<String>) -> ImportError {
        let (line, column) = self.line_col(at);
        ImportError::Malformed { format: "bookmark file", line, column, message: message.into() }
    }

    fn next(&mut self) -> Result<Option<Piece<'a>>, ImportError> {
        let rest = self.text.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            return Ok(None);
        }
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").ok_or_else(|| self.error(self.pos, "comment is never closed"))?;
            self.pos = self.pos.saturating_add(4).saturating_add(end).saturating_add(3);
            return self.next();
        }
        if rest.starts_with('<') {
            let at = self.pos;
            // Find the closing '>' outside quoted attribute values.
            let mut quote: Option<char> = None;
            let mut end = None;
            for (i, c) in rest.char_indices().skip(1) {
                match (quote, c) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, '"' | '\'') => quote = Some(c),
                    (None, '>') => {
                        end = Some(i);
                        break;
                    }
                    (None, '<') => return Err(self.error(at.saturating_add(i), "'<' inside a tag")),
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| self.error(at, "tag is never closed with '>'"))?;
            let inner = rest.get(1..end).unwrap_or_default();
            self.pos = at.saturating_add(end).saturating_add(1);
            let (closing, inner) = match inner.strip_prefix('/') {
                Some(i) => (true, i),
                None => (false, inner),
            };
            let name_len = inner.find(|c: char| c.is_whitespace() || c == '/').unwrap_or(inner.len());
            let name = inner.get(..name_len).unwrap_or_default().to_ascii_lowercase();
            let attrs = inner.get(name_len..).unwrap_or_default();
            return Ok(Some(Piece::Tag { name, closing, attrs, at }));
        }
        let len = rest.find('<').unwrap_or(rest.len());
        self.pos = self.pos.saturating_add(len);
        Ok(Some(Piece::Text(rest.get(..len).unwrap_or_default())))
    }
}

/// The value of attribute `name` (case-insensitive) in raw attribute text.
fn attribute(attrs: &str, name: &str) -> Option<String> {
    let mut rest = attrs;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return None;
        }
        let key_len = rest.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(rest.len());
        let key = rest.get(..key_len)?;
        rest = rest.get(key_len..)?.trim_start();
        let value = if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let body = after.get(1..)?;
                    let end = body.find(q)?;
                    rest = body.get(end.saturating_add(1)..)?;
                    body.get(..end)?
                }
                _ => {
                    let end = after.find(char::is_whitespace).unwrap_or(after.len());
                    rest = after.get(end..)?;
                    after.get(..end)?
                }
            }
        } else {
            ""
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(html_escape::decode_html_entities(value).into_owned());
        }
    }
}

fn text_of(raw: &str) -> String {
    html_escape::decode_html_entities(raw.trim()).into_owned()
}

/// Parses a Netscape bookmark file (`<!DOCTYPE NETSCAPE-Bookmark-file-1>`).
///
/// Top-level folders marked `PERSONAL_TOOLBAR_FOLDER` go to the toolbar, `UNFILED_BOOKMARKS_FOLDER`
/// to "other bookmarks"; everything else at the top goes to the bookmarks menu.
pub fn parse_netscape(text: &str) -> Result<BookmarkFile, ImportError> {
    let mut s = Scanner { text, pos: 0 };
    if text.len() > MAX_IMPORT_LEN {
        return Err(s.error(0, format!("file is larger than {MAX_IMPORT_LEN} bytes")));
    }
    const DOCTYPE: &str = "<!DOCTYPE NETSCAPE-Bookmark-file-1>";
    if !text.trim_start().get(..DOCTYPE.len()).is_some_and(|h| h.eq_ignore_ascii_case(DOCTYPE)) {
        return Err(s.error(0, "not a Netscape bookmark file (missing <!DOCTYPE NETSCAPE-Bookmark-file-1>)"));
    }
    // Stack of open <DL> lists: (children so far, the folder title and flags that opened it).
    struct Open {
        children: Vec<FileNode>,
        title: String,
        root: Option<ItemId>,
        at: usize,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut top: Vec<(ItemId, Vec<FileNode>)> = Vec::new();
    // A folder heading waiting for its <DL>: (title, root marker, position).
    let mut heading: Option<(String, Option<ItemId>, usize)> = None;
    let mut seen_top_list = false;
    while let Some(piece) = s.next()? {
        let Piece::Tag { name, closing, attrs, at } = piece else { continue };
        match (name.as_str(), closing) {
            ("h3", false) => {
                let root = if attribute(attrs, "PERSONAL_TOOLBAR_FOLDER")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
                {
                    Some(ItemId::TOOLBAR)
                } else if attribute(attrs, "UNFILED_BOOKMARKS_FOLDER").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                    Some(ItemId::OTHER)
                } else {
                    None
                };
                let title = read_until_close(&mut s, "h3", at)?;
                heading = Some((title, root, at));
            }
            ("a", false) => {
                let href = attribute(attrs, "HREF").ok_or_else(|| s.error(at, "<A> without HREF"))?;
                let title = read_until_close(&mut s, "a", at)?;
                let open = stack.last_mut().ok_or_else(|| s.error(at, "bookmark outside any <DL> list"))?;
                open.children.push(FileNode::Bookmark { title, url: href });
            }
            ("hr", false) => {
                if let Some(open) = stack.last_mut() {
                    open.children.push(FileNode::Separator);
                }
            }
            ("dl", false) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(s.error(at, format!("folders nested deeper than {MAX_DEPTH}")));
                }
                let (title, root) = match heading.take() {
                    Some((title, root, _)) => (title, root),
                    None if stack.is_empty() && !seen_top_list => (String::new(), None),
                    None => return Err(s.error(at, "<DL> list without a folder heading (<H3>) before it")),
                };
                seen_top_list = true;
                stack.push(Open { children: Vec::new(), title, root, at });
            }
            ("dl", true) => {
                let open = stack.pop().ok_or_else(|| s.error(at, "</DL> without a matching <DL>"))?;
                let depth = stack.len();
                match (stack.last_mut(), open.root) {
                    // The outermost list: loose items go to the bookmarks menu.
                    (None, _) => top.push((ItemId::MENU, open.children)),
                    // A marked folder at the top becomes a root.
                    (Some(_), Some(root)) if depth == 1 => top.push((root, open.children)),
                    (Some(parent), _) => {
                        parent.children.push(FileNode::Folder { title: open.title, children: open.children })
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(s.error(open.at, "<DL> list is never closed"));
    }
    if let Some((_, _, at)) = heading {
        return Err(s.error(at, "folder heading without its <DL> list"));
    }
    if !seen_top_list {
        return Err(s.error(text.len(), "no <DL> list of bookmarks"));
    }
    // Merge entries for the same root, keeping file order.
    let mut merged: Vec<(ItemId, Vec<FileNode>)> = Vec::new();
    for (root, children) in top {
        match merged.iter_mut().find(|(r, _)| *r == root) {
            Some((_, list)) => list.extend(children),
            None => merged.push((root, children)),
        }
    }
    Ok(BookmarkFile { roots: merged })
}

fn read_until_close(s: &mut Scanner<'_>, tag: &str, opened_at: usize) -> Result<String, ImportError> {
    let mut title = String::new();
    loop {
        match s.next()? {
            Some(Piece::Text(t)) => title.push_str(t),
            Some(Piece::Tag { name, closing: true, .. }) if name == tag => return Ok(text_of(&title)),
            Some(Piece::Tag { at, .. }) => {
                return Err(s.error(at, format!("<{}> is not closed before the next tag", tag.to_ascii_uppercase())));
            }
            None => return Err(s.error(opened_at, format!("<{}> is never closed", tag.to_ascii_uppercase()))),
        }
    }
}

/// Writes bookmarks as a Netscape bookmark file.
pub fn export_netscape(file: &BookmarkFile) -> String {
    fn esc(s: &str) -> String {
        html_escape::encode_double_quoted_attribute(s).replace('\'', "&#39;")
    }
    fn write(out: &mut String, nodes: &[FileNode], depth: usize) {
        let indent = "    ".repeat(depth);
        for node in nodes {
            match node {
                FileNode::Folder { title, children } => {
                    out.push_str(&format!("{indent}<DT><H3>{}</H3>\n{indent}<DL><p>\n", esc(title)));
                    write(out, children, depth.saturating_add(1));
                    out.push_str(&format!("{indent}</DL><p>\n"));
                }
                FileNode::Bookmark { title, url } => {
                    out.push_str(&format!("{indent}<DT><A HREF=\"{}\">{}</A>\n", esc(url), esc(title)));
                }
                FileNode::Separator => out.push_str(&format!("{indent}<HR>\n")),
            }
        }
    }
    let mut out = String::from(
        "<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<!-- This is an automatically generated file.\n     It will be read and overwritten.\n     DO NOT EDIT! -->\n<META HTTP-EQUIV=\"Content-Type\" CONTENT=\"text/html; charset=UTF-8\">\n<TITLE>Bookmarks</TITLE>\n<H1>Bookmarks</H1>\n<DL><p>\n",
    );
    for (root, marker, title) in [
        (ItemId::TOOLBAR, " PERSONAL_TOOLBAR_FOLDER=\"true\"", "Bookmarks bar"),
        (ItemId::OTHER, " UNFILED_BOOKMARKS_FOLDER=\"true\"", "Other bookmarks"),
    ] {
        out.push_str(&format!("    <DT><H3{marker}>{title}</H3>\n    <DL><p>\n"));
        write(&mut out, file.children(&root), 2);
        out.push_str("    </DL><p>\n");
    }
    write(&mut out, file.children(&ItemId::MENU), 1);
    let mobile = file.children(&ItemId::MOBILE);
    if !mobile.is_empty() {
        out.push_str("    <DT><H3>Mobile bookmarks</H3>\n    <DL><p>\n");
        write(&mut out, mobile, 2);
        out.push_str("    </DL><p>\n");
    }
    out.push_str("</DL><p>\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Chromium's `Bookmarks` JSON
// ---------------------------------------------------------------------------------------------

#[derive(serde::Deserialize, serde::Serialize)]
struct ChromiumFile {
    roots: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    version: u32,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct ChromiumNode {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    children: Vec<ChromiumNode>,
}

fn json_error(e: &serde_json::Error) -> ImportError {
    ImportError::Malformed {
        format: "Chromium bookmarks JSON",
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    }
}

/// Parses Chromium's `Bookmarks` file: `bookmark_bar` goes to the toolbar, `other` to "other
/// bookmarks", `synced` to mobile.
pub fn parse_chromium_json(text: &str) -> Result<BookmarkFile, ImportError> {
    let file: ChromiumFile = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    fn convert(node: ChromiumNode, depth: usize) -> Result<FileNode, String> {
        match node.kind.as_str() {
            "url" => Ok(FileNode::Bookmark { title: node.name, url: node.url.ok_or("a \"url\" node without a url")? }),
            "folder" if depth < MAX_DEPTH => Ok(FileNode::Folder {
                title: node.name,
                children: node
                    .children
                    .into_iter()
                    .map(|c| convert(c, depth.saturating_add(1)))
                    .collect::<Result<_, _>>()?,
            }),
            "folder" => Err(format!("folders nested deeper than {MAX_DEPTH}")),
            other => Err(format!("unknown node type {other:?}")),
        }
    }
    let mut roots = Vec::new();
    for (key, root) in [("bookmark_bar", ItemId::TOOLBAR), ("other", ItemId::OTHER), ("synced", ItemId::MOBILE)] {
        let Some(value) = file.roots.get(key) else { continue };
        let node: ChromiumNode = serde_json::from_value(value.clone()).map_err(|e| ImportError::Malformed {
            format: "Chromium bookmarks JSON",
            line: 0,
            column: 0,
            message: format!("roots.{key}: {e}"),
        })?;
        let children =
            node.children.into_iter().map(|c| convert(c, 1)).collect::<Result<Vec<_>, _>>().map_err(|message| {
                ImportError::Malformed {
                    format: "Chromium bookmarks JSON",
                    line: 0,
                    column: 0,
                    message: format!("roots.{key}: {message}"),
                }
            })?;
        roots.push((root, children));
    }
    if roots.is_empty() {
        return Err(ImportError::Malformed {
            format: "Chromium bookmarks JSON",
            line: 1,
            column: 1,
            message: "no bookmark_bar, other or synced root".into(),
        });
    }
    Ok(BookmarkFile { roots })
}

/// Writes bookmarks as Chromium's `Bookmarks` JSON (the menu root, which Chromium lacks,
/// becomes a folder "Bookmarks menu" under "other"; separators, which it lacks too, are left
/// out).
pub fn export_chromium_json(file: &BookmarkFile) -> String {
    fn children(nodes: &[FileNode]) -> Vec<ChromiumNode> {
        nodes
            .iter()
            .filter_map(|n| match n {
                FileNode::Bookmark { title, url } => Some(ChromiumNode {
                    kind: "url".into(),
                    name: title.clone(),
                    url: Some(url.clone()),
                    children: vec![],
                }),
                FileNode::Folder { title, children: inner } => Some(ChromiumNode {
                    kind: "folder".into(),
                    name: title.clone(),
                    url: None,
                    children: children(inner),
                }),
                FileNode::Separator => None,
            })
            .collect()
    }
    let folder = |name: &str, children: Vec<ChromiumNode>| {
        serde_json::to_value(ChromiumNode { kind: "folder".into(), name: name.into(), url: None, children })
            .unwrap_or_default()
    };
    let mut other = children(file.children(&ItemId::OTHER));
    let menu = children(file.children(&ItemId::MENU));
    if !menu.is_empty() {
        other.push(ChromiumNode { kind: "folder".into(), name: "Bookmarks menu".into(), url: None, children: menu });
    }
    let mut roots = BTreeMap::new();
    roots.insert("bookmark_bar".to_owned(), folder("Bookmarks bar", children(file.children(&ItemId::TOOLBAR))));
    roots.insert("other".to_owned(), folder("Other bookmarks", other));
    roots.insert("synced".to_owned(), folder("Mobile bookmarks", children(file.children(&ItemId::MOBILE))));
    serde_json::to_string_pretty(&ChromiumFile { roots, version: 1 }).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Applying bookmarks
// ---------------------------------------------------------------------------------------------

impl<R: CryptoRngCore> Edit<'_, R> {
    /// Adds parsed bookmarks, reusing folders and skipping duplicates.
    pub fn import_bookmarks(&mut self, imported: &BookmarkFile) -> Result<ImportReport, ModelError> {
        let tree = self.tree().clone();
        let mut report = ImportReport::default();
        // The last position used under each parent, so bulk adds need no tree rebuild.
        let mut last: BTreeMap<ItemId, Option<Position>> = BTreeMap::new();
        for (root, children) in &imported.roots {
            self.import_into(&tree, *root, true, children, &mut last, &mut report, 0)?;
        }
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    fn import_into(
        &mut self,
        tree: &BookmarkTree,
        parent: ItemId,
        existed: bool,
        nodes: &[FileNode],
        last: &mut BTreeMap<ItemId, Option<Position>>,
        report: &mut ImportReport,
        depth: usize,
    ) -> Result<(), ModelError> {
        if depth > MAX_DEPTH {
            return Ok(());
        }
        let existing: Vec<&crate::model::bookmarks::BookmarkNode> =
            if existed { tree.children(&parent).iter().filter_map(|c| tree.get(c)).collect() } else { Vec::new() };
        let next_position = |last: &mut BTreeMap<ItemId, Option<Position>>| {
            let entry = last.entry(parent).or_insert_with(|| existing.last().map(|n| n.position.clone()));
            let p = Position::between(entry.as_ref(), None).ok_or(ModelError::FolderFull { folder: parent })?;
            *entry = Some(p.clone());
            Ok::<_, ModelError>(p)
        };
        for node in nodes {
            match node {
                FileNode::Folder { title, children } => {
                    let found = existing.iter().find(|n| n.kind == NodeKind::Folder && n.title == *title).map(|n| n.id);
                    let (id, existed) = match found {
                        Some(id) => (id, true),
                        None => {
                            let id = self.new_id();
                            let position = next_position(last)?;
                            self.add_bookmark_at(id, parent, position, NodeKind::Folder, title, None)?;
                            report.folders_added = report.folders_added.saturating_add(1);
                            (id, false)
                        }
                    };
                    self.import_into(tree, id, existed, children, last, report, depth.saturating_add(1))?;
                }
                FileNode::Bookmark { title, url } => {
                    let duplicate = existing.iter().any(|n| {
                        n.kind == NodeKind::Bookmark && n.title == *title && n.url.as_deref() == Some(url.as_str())
                    });
                    if duplicate {
                        report.duplicates_skipped = report.duplicates_skipped.saturating_add(1);
                        continue;
                    }
                    let id = self.new_id();
                    let position = next_position(last)?;
                    self.add_bookmark_at(id, parent, position, NodeKind::Bookmark, title, Some(url))?;
                    report.bookmarks_added = report.bookmarks_added.saturating_add(1);
                }
                // Separators cannot be matched; add them only where the folder held nothing before.
                FileNode::Separator if existing.is_empty() => {
                    let id = self.new_id();
                    let position = next_position(last)?;
                    self.add_bookmark_at(id, parent, position, NodeKind::Separator, "", None)?;
                    report.bookmarks_added = report.bookmarks_added.saturating_add(1);
                }
                FileNode::Separator => report.duplicates_skipped = report.duplicates_skipped.saturating_add(1),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Password CSV
// ---------------------------------------------------------------------------------------------

/// One login as a password CSV file carries it: read by an import, written by an export.
/// Holds a password in the clear, so it is wiped when dropped.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PasswordRow {
    /// Site.
    pub origin: String,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Notes.
    pub notes: String,
}

/// Parses password CSV in the Chrome (`name,url,username,password,note`), Firefox
/// (`url,username,password,httpRealm,…`) or Bitwarden (`folder,favorite,type,name,notes,…,
/// login_uri,login_username,login_password,…`) layout, told apart by the header.
pub fn parse_password_csv(text: &str) -> Result<Vec<PasswordRow>, ImportError> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_bytes());
    let csv_error = |e: csv::Error| {
        let (line, column) = e.position().map_or((0, 0), |p| (usize::try_from(p.line()).unwrap_or(0), 0));
        ImportError::Malformed { format: "password CSV", line, column, message: e.to_string() }
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let layout = if let (Some(u), Some(n), Some(p)) = (col("login_uri"), col("login_username"), col("login_password")) {
        (u, n, p, col("notes"), col("type"))
    } else if let (Some(u), Some(n), Some(p)) = (col("url"), col("username"), col("password")) {
        (u, n, p, col("note").or_else(|| col("notes")), None)
    } else {
        return Err(ImportError::UnknownCsvLayout(headers.iter().collect::<Vec<_>>().join(",")));
    };
    let (url_col, user_col, pass_col, notes_col, type_col) = layout;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        // Bitwarden exports cards and notes too; only logins are imported.
        if let Some(t) = type_col
            && record.get(t).is_some_and(|t| !t.eq_ignore_ascii_case("login"))
        {
            continue;
        }
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or_default().to_owned();
        let origin = field(Some(url_col));
        if origin.is_empty() {
            let line = record.position().map_or(0, |p| usize::try_from(p.line()).unwrap_or(0));
            return Err(ImportError::Malformed {
                format: "password CSV",
                line,
                column: 0,
                message: "login without a URL".into(),
            });
        }
        out.push(PasswordRow {
            origin,
            username: field(Some(user_col)),
            password: field(Some(pass_col)),
            notes: field(notes_col),
        });
    }
    Ok(out)
}

impl<R: CryptoRngCore> Edit<'_, R> {
    /// Adds parsed logins: a login with the origin and user name of an existing entry updates
    /// its password if different, else is skipped.
    pub fn import_passwords(&mut self, logins: &[PasswordRow]) -> Result<ImportReport, ModelError> {
        let mut report = ImportReport::default();
        // Inserted, not `collect()`ed: a collect sorts first, more code in the `.wasm`.
        let mut existing: BTreeMap<(String, String), ItemId> = BTreeMap::new();
        existing.extend(self.state.passwords().into_iter().map(|p| ((p.origin, p.username), p.id)));
        for login in logins {
            let key = (login.origin.clone(), login.username.clone());
            match existing.get(&key) {
                Some(id) => {
                    let current = self.state.reveal_password_field(id, "password")?;
                    if current == login.password {
                        report.duplicates_skipped = report.duplicates_skipped.saturating_add(1);
                    } else {
                        self.set_password_fields(id, None, None, Some(&login.password), None)?;
                        report.passwords_updated = report.passwords_updated.saturating_add(1);
                    }
                }
                None => {
                    let id = self.add_password(&login.origin, &login.username, &login.password, &login.notes)?;
                    existing.insert(key, id);
                    report.passwords_added = report.passwords_added.saturating_add(1);
                }
            }
        }
        Ok(report)
    }
}

impl core::fmt::Debug for PasswordRow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PasswordRow")
            .field("origin", &self.origin)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("notes", &"<redacted>")
            .finish()
    }
}

/// Every password entry, decrypted, in the form an export writes. Needs the vault unlocked.
pub fn password_rows(state: &BrowserState) -> Result<Vec<PasswordRow>, ModelError> {
    state
        .passwords()
        .into_iter()
        .map(|entry| {
            Ok(PasswordRow {
                password: state.reveal_password_field(&entry.id, "password")?,
                notes: state.reveal_password_field(&entry.id, "notes")?,
                origin: entry.origin,
                username: entry.username,
            })
        })
        .collect()
}

/// The encoding that carries password rows between the package's two `.wasm` modules: format
/// byte `0xc1`, a `u32` row count, and per row its origin, user name, password and notes, each
/// `u32`-prefixed. It holds passwords in the clear, so it is wiped when dropped.
pub fn encode_password_rows(rows: &[PasswordRow]) -> Zeroizing<Vec<u8>> {
    // Sized exactly: a buffer that grew would leave unwiped copies behind.
    let len = rows.iter().fold(5usize, |n, r| {
        [&r.origin, &r.username, &r.password, &r.notes]
            .iter()
            .fold(n, |n, f| n.saturating_add(4).saturating_add(f.len()))
    });
    let mut w = Writer::with_capacity(len);
    w.u8(PASSWORD_ROWS_FORMAT).u32(u32::try_from(rows.len()).unwrap_or(u32::MAX));
    for row in rows {
        for field in [&row.origin, &row.username, &row.password, &row.notes] {
            w.bytes_u32(field.as_bytes());
        }
    }
    Zeroizing::new(w.into_bytes())
}

/// Decodes [`encode_password_rows`]'s bytes, refusing any count or length beyond the bytes given.
pub fn decode_password_rows(bytes: &[u8]) -> Result<Vec<PasswordRow>, DecodeError> {
    let mut r = Reader::new(bytes);
    r.format("password rows", PASSWORD_ROWS_FORMAT)?;
    let count = r.u32("password row count")?;
    // A row takes at least its four length prefixes.
    r.check_len(u64::from(count).saturating_mul(16), MAX_FILE_STRING.into(), "password row count")?;
    let mut string = |what| {
        let bytes = r.bytes_u32(MAX_FILE_STRING, what)?;
        // Checked before copying: a copy that failed would be freed unwiped.
        core::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::InvalidUtf8 { what })
    };
    let mut rows = Vec::new();
    for _ in 0..count {
        rows.push(PasswordRow {
            origin: string("password row origin")?,
            username: string("password row user name")?,
            password: string("password row password")?,
            notes: string("password row notes")?,
        });
    }
    r.finish("password rows")?;
    Ok(rows)
}

/// Writes password rows as CSV in Chrome's layout (`name,url,username,password,note`).
///
/// The output is reserved at its largest possible size (every byte a doubled quote) so it never
/// reallocates and leaves no copy of the passwords behind; the CSV writer's own small buffer is
/// the library's and is not wiped.
pub fn export_password_csv(rows: &[PasswordRow]) -> Result<String, ImportError> {
    let most = rows.iter().fold(64usize, |n, r| {
        let fields = r.origin.len().saturating_mul(2).saturating_add(r.username.len()).saturating_add(r.password.len());
        n.saturating_add(fields.saturating_add(r.notes.len()).saturating_mul(2).saturating_add(16))
    });
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(most));
    let io =
        |e: csv::Error| ImportError::Malformed { format: "password CSV", line: 0, column: 0, message: leak(e).into() };
    writer.write_record(["name", "url", "username", "password", "note"]).map_err(io)?;
    for row in rows {
        let name = row.origin.split("://").nth(1).unwrap_or(&row.origin).split('/').next().unwrap_or_default();
        writer.write_record([name, &row.origin, &row.username, &row.password, &row.notes]).map_err(io)?;
    }
    let bytes = writer.into_inner().map_err(|e| io(e.into_error().into()))?;
    String::from_utf8(bytes).map_err(|_| io(csv::Error::from(std::io::Error::other("invalid UTF-8"))))
}

/// Writing CSV to memory only fails on invalid UTF-8, which cannot occur here; name it statically.
fn leak(_: csv::Error) -> &'static str {
    "could not write CSV"
}
