//! Import and export in the formats people already have: the Netscape bookmark file every
//! browser exports, Chromium's `Bookmarks` JSON, and password CSV as Chrome, Firefox and
//! Bitwarden write it.
//!
//! Imports parse the **whole** file first; a malformed file gives an error with its line (and
//! column or record) and changes nothing. Applying is idempotent: a folder with the same title
//! under the same parent is reused, a bookmark with the same title and URL in the same folder is
//! skipped, a password entry with the same origin and user name is updated only if the password
//! differs — so importing a file twice adds nothing the second time.

use std::collections::BTreeMap;

use rand_core::CryptoRngCore;

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

/// A bookmark tree read from a file, before it touches the replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportNode {
    /// A folder and its children.
    Folder {
        /// Title.
        title: String,
        /// Children in order.
        children: Vec<ImportNode>,
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

/// Parsed bookmarks: children to put under each root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportedBookmarks {
    /// `(root, children)` pairs.
    pub roots: Vec<(ItemId, Vec<ImportNode>)>,
}

impl ImportedBookmarks {
    /// Number of bookmarks (not folders or separators).
    pub fn bookmark_count(&self) -> usize {
        fn count(nodes: &[ImportNode]) -> usize {
            nodes
                .iter()
                .map(|n| match n {
                    ImportNode::Bookmark { .. } => 1,
                    ImportNode::Folder { children, .. } => count(children),
                    ImportNode::Separator => 0,
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
pub fn parse_netscape(text: &str) -> Result<ImportedBookmarks, ImportError> {
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
        children: Vec<ImportNode>,
        title: String,
        root: Option<ItemId>,
        at: usize,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut top: Vec<(ItemId, Vec<ImportNode>)> = Vec::new();
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
                open.children.push(ImportNode::Bookmark { title, url: href });
            }
            ("hr", false) => {
                if let Some(open) = stack.last_mut() {
                    open.children.push(ImportNode::Separator);
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
                        parent.children.push(ImportNode::Folder { title: open.title, children: open.children })
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
    let mut merged: Vec<(ItemId, Vec<ImportNode>)> = Vec::new();
    for (root, children) in top {
        match merged.iter_mut().find(|(r, _)| *r == root) {
            Some((_, list)) => list.extend(children),
            None => merged.push((root, children)),
        }
    }
    Ok(ImportedBookmarks { roots: merged })
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

/// Writes the bookmarks as a Netscape bookmark file.
pub fn export_netscape(tree: &BookmarkTree) -> String {
    fn esc(s: &str) -> String {
        html_escape::encode_double_quoted_attribute(s).replace('\'', "&#39;")
    }
    fn write(out: &mut String, tree: &BookmarkTree, parent: &ItemId, depth: usize) {
        let indent = "    ".repeat(depth);
        for id in tree.children(parent) {
            let Some(node) = tree.get(id) else { continue };
            match node.kind {
                NodeKind::Folder => {
                    out.push_str(&format!("{indent}<DT><H3>{}</H3>\n{indent}<DL><p>\n", esc(&node.title)));
                    if depth < MAX_DEPTH {
                        write(out, tree, id, depth.saturating_add(1));
                    }
                    out.push_str(&format!("{indent}</DL><p>\n"));
                }
                NodeKind::Bookmark => {
                    let url = node.url.as_deref().unwrap_or_default();
                    out.push_str(&format!("{indent}<DT><A HREF=\"{}\">{}</A>\n", esc(url), esc(&node.title)));
                }
                NodeKind::Separator => out.push_str(&format!("{indent}<HR>\n")),
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
        write(&mut out, tree, &root, 2);
        out.push_str("    </DL><p>\n");
    }
    write(&mut out, tree, &ItemId::MENU, 1);
    if !tree.children(&ItemId::MOBILE).is_empty() {
        out.push_str("    <DT><H3>Mobile bookmarks</H3>\n    <DL><p>\n");
        write(&mut out, tree, &ItemId::MOBILE, 2);
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
pub fn parse_chromium_json(text: &str) -> Result<ImportedBookmarks, ImportError> {
    let file: ChromiumFile = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    fn convert(node: ChromiumNode, depth: usize) -> Result<ImportNode, String> {
        match node.kind.as_str() {
            "url" => {
                Ok(ImportNode::Bookmark { title: node.name, url: node.url.ok_or("a \"url\" node without a url")? })
            }
            "folder" if depth < MAX_DEPTH => Ok(ImportNode::Folder {
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
    Ok(ImportedBookmarks { roots })
}

/// Writes the bookmarks as Chromium's `Bookmarks` JSON (the menu root, which Chromium lacks,
/// becomes a folder "Bookmarks menu" under "other").
pub fn export_chromium_json(tree: &BookmarkTree) -> String {
    fn node(tree: &BookmarkTree, id: &ItemId, depth: usize) -> Option<ChromiumNode> {
        let n = tree.get(id)?;
        Some(match n.kind {
            NodeKind::Bookmark => {
                ChromiumNode { kind: "url".into(), name: n.title.clone(), url: n.url.clone(), children: vec![] }
            }
            NodeKind::Folder => ChromiumNode {
                kind: "folder".into(),
                name: n.title.clone(),
                url: None,
                children: if depth < MAX_DEPTH { children(tree, id, depth.saturating_add(1)) } else { vec![] },
            },
            NodeKind::Separator => return None,
        })
    }
    fn children(tree: &BookmarkTree, parent: &ItemId, depth: usize) -> Vec<ChromiumNode> {
        tree.children(parent).iter().filter_map(|c| node(tree, c, depth)).collect()
    }
    let folder = |name: &str, children: Vec<ChromiumNode>| {
        serde_json::to_value(ChromiumNode { kind: "folder".into(), name: name.into(), url: None, children })
            .unwrap_or_default()
    };
    let mut other = children(tree, &ItemId::OTHER, 1);
    let menu = children(tree, &ItemId::MENU, 2);
    if !menu.is_empty() {
        other.push(ChromiumNode { kind: "folder".into(), name: "Bookmarks menu".into(), url: None, children: menu });
    }
    let mut roots = BTreeMap::new();
    roots.insert("bookmark_bar".to_owned(), folder("Bookmarks bar", children(tree, &ItemId::TOOLBAR, 1)));
    roots.insert("other".to_owned(), folder("Other bookmarks", other));
    roots.insert("synced".to_owned(), folder("Mobile bookmarks", children(tree, &ItemId::MOBILE, 1)));
    serde_json::to_string_pretty(&ChromiumFile { roots, version: 1 }).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Applying bookmarks
// ---------------------------------------------------------------------------------------------

impl<R: CryptoRngCore> Edit<'_, R> {
    /// Adds parsed bookmarks, reusing folders and skipping duplicates.
    pub fn import_bookmarks(&mut self, imported: &ImportedBookmarks) -> Result<ImportReport, ModelError> {
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
        nodes: &[ImportNode],
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
                ImportNode::Folder { title, children } => {
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
                ImportNode::Bookmark { title, url } => {
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
                ImportNode::Separator if existing.is_empty() => {
                    let id = self.new_id();
                    let position = next_position(last)?;
                    self.add_bookmark_at(id, parent, position, NodeKind::Separator, "", None)?;
                    report.bookmarks_added = report.bookmarks_added.saturating_add(1);
                }
                ImportNode::Separator => report.duplicates_skipped = report.duplicates_skipped.saturating_add(1),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Password CSV
// ---------------------------------------------------------------------------------------------

/// One login read from a CSV file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedLogin {
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
pub fn parse_password_csv(text: &str) -> Result<Vec<ImportedLogin>, ImportError> {
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
        out.push(ImportedLogin {
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
    pub fn import_passwords(&mut self, logins: &[ImportedLogin]) -> Result<ImportReport, ModelError> {
        let mut report = ImportReport::default();
        let mut existing: BTreeMap<(String, String), ItemId> =
            self.state.passwords().into_iter().map(|p| ((p.origin, p.username), p.id)).collect();
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

/// Writes every password entry as CSV in Chrome's layout (`name,url,username,password,note`).
/// Needs the vault unlocked.
pub fn export_password_csv(state: &BrowserState) -> Result<String, ModelError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let io =
        |e: csv::Error| ModelError::Invalid(crate::error::DecodeError::NonCanonical { what: "csv", reason: leak(e) });
    writer.write_record(["name", "url", "username", "password", "note"]).map_err(io)?;
    for entry in state.passwords() {
        let password = state.reveal_password_field(&entry.id, "password")?;
        let notes = state.reveal_password_field(&entry.id, "notes")?;
        let name =
            entry.origin.split("://").nth(1).unwrap_or(&entry.origin).split('/').next().unwrap_or_default().to_owned();
        writer.write_record([name.as_str(), &entry.origin, &entry.username, &password, &notes]).map_err(io)?;
    }
    let bytes = writer.into_inner().map_err(|e| io(e.into_error().into()))?;
    String::from_utf8(bytes).map_err(|_| ModelError::Invalid(crate::error::DecodeError::InvalidUtf8 { what: "csv" }))
}

/// Writing CSV to memory only fails on invalid UTF-8, which cannot occur here; name it statically.
fn leak(_: csv::Error) -> &'static str {
    "could not write CSV"
}
