//! Passwords, key records and workspaces: entries made of per-field registers.
//!
//! An entry `<kind>/<id>/` has one register per field and a `state` register. Deleting an entry
//! writes a delete value into `state` that supersedes every value of the entry its writer had
//! seen; as with bookmarks, a field edit the deletion had not seen **revives** the entry, so a
//! concurrent edit is never silently lost. Because every field is its own register, concurrent
//! edits of different fields (one device changes the username, another the password) both survive.

use std::collections::BTreeMap;

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;
use crate::identity::DeviceId;
use crate::model::schema::{ItemId, MAX_TITLE_LEN, MAX_URL_LEN, STATE_DELETED, decode_text, decode_u64};
use crate::register::{Register, VerifiedRegisterValue};

/// The registers of one entry, by field name.
pub(crate) type Fields<'a> = BTreeMap<&'a str, &'a Register>;

/// Groups `kind/…` registers by entry.
pub(crate) fn group<'a>(
    kind: &str,
    registers: impl Iterator<Item = (&'a str, &'a Register)>,
) -> BTreeMap<ItemId, Fields<'a>> {
    let mut out: BTreeMap<ItemId, Fields<'a>> = BTreeMap::new();
    for (path, register) in registers {
        if let Some((k, id, field)) = crate::model::schema::path::split(path)
            && k == kind
            && let Ok(id) = id.parse::<ItemId>()
        {
            out.entry(id).or_default().insert(field, register);
        }
    }
    out
}

/// Whether an entry is live: its state is not a deletion, or a field value the deletion had not
/// seen revives it.
pub(crate) fn is_live(fields: &Fields<'_>, now_ms: u64, skew: u64) -> bool {
    let Some(state) = fields.get("state").and_then(|r| r.current(now_ms, skew)) else {
        // No visible state yet: live if any field is visible.
        return fields.values().any(|r| r.current(now_ms, skew).is_some());
    };
    if state.value() != STATE_DELETED {
        return true;
    }
    fields.values().flat_map(|r| r.values()).filter(|v| v.hlc().is_visible_at(now_ms, skew)).any(|v| {
        v.id() != state.id() && state.supersedes().binary_search(&v.id()).is_err() && v.value() != STATE_DELETED
    })
}

pub(crate) fn current<'a>(
    fields: &Fields<'a>,
    field: &str,
    now_ms: u64,
    skew: u64,
) -> Option<&'a VerifiedRegisterValue> {
    fields.get(field).and_then(|r| r.current(now_ms, skew))
}

pub(crate) fn text(fields: &Fields<'_>, field: &str, max: u16, now_ms: u64, skew: u64) -> String {
    current(fields, field, now_ms, skew).and_then(|v| decode_text(v.value(), max, "text").ok()).unwrap_or_default()
}

/// The latest change to any field.
pub(crate) fn changed(fields: &Fields<'_>, now_ms: u64, skew: u64) -> (u64, Option<DeviceId>) {
    fields
        .values()
        .filter_map(|r| r.current(now_ms, skew))
        .max_by_key(|v| (v.hlc(), *v.author()))
        .map_or((0, None), |v| (v.hlc().wall_ms, Some(*v.author())))
}

/// A password entry as shown (secrets stay sealed until revealed with the vault).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordEntry {
    /// Stable ID.
    #[serde(serialize_with = "crate::model::json::item_id")]
    pub id: ItemId,
    /// The site, e.g. `https://example.org`.
    pub origin: String,
    /// The user name.
    pub username: String,
    /// Whether a password is stored.
    pub has_password: bool,
    /// Whether notes are stored.
    pub has_notes: bool,
    /// Creation time, Unix ms.
    pub created_ms: u64,
    /// Last change to any field, Unix ms.
    pub changed_ms: u64,
    /// The device that made the last change.
    #[serde(skip)]
    pub changed_by: Option<DeviceId>,
}

pub(crate) fn password_entry(id: ItemId, fields: &Fields<'_>, now_ms: u64, skew: u64) -> PasswordEntry {
    let (changed_ms, changed_by) = changed(fields, now_ms, skew);
    PasswordEntry {
        id,
        origin: text(fields, "origin", MAX_URL_LEN, now_ms, skew),
        username: text(fields, "username", MAX_TITLE_LEN, now_ms, skew),
        has_password: current(fields, "password", now_ms, skew).is_some_and(|v| !v.value().is_empty()),
        has_notes: current(fields, "notes", now_ms, skew).is_some_and(|v| !v.value().is_empty()),
        created_ms: current(fields, "created", now_ms, skew)
            .and_then(|v| decode_u64(v.value(), "created").ok())
            .unwrap_or(0),
        changed_ms,
        changed_by,
    }
}

/// A key record as shown (the key material stays sealed until revealed with the vault).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    /// Stable ID.
    #[serde(serialize_with = "crate::model::json::item_id")]
    pub id: ItemId,
    /// A name chosen by the user.
    pub name: String,
    /// What kind of key (`ssh-ed25519`, `pgp`, `webauthn`, …).
    pub key_type: String,
    /// Last change, Unix ms.
    pub changed_ms: u64,
}

pub(crate) fn key_record(id: ItemId, fields: &Fields<'_>, now_ms: u64, skew: u64) -> KeyRecord {
    KeyRecord {
        id,
        name: text(fields, "name", MAX_TITLE_LEN, now_ms, skew),
        key_type: text(fields, "type", MAX_TITLE_LEN, now_ms, skew),
        changed_ms: changed(fields, now_ms, skew).0,
    }
}

/// A browser tab.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tab {
    /// Page URL.
    pub url: String,
    /// Page title.
    pub title: String,
    /// Pinned.
    #[serde(default)]
    pub pinned: bool,
    /// Index into the window's groups, if grouped.
    #[serde(default)]
    pub group: Option<u16>,
}

/// A tab group.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TabGroup {
    /// Title.
    pub title: String,
    /// Colour name (`grey`, `blue`, `red`, …).
    #[serde(default)]
    pub color: String,
    /// Collapsed.
    #[serde(default)]
    pub collapsed: bool,
}

/// A browser window.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// Tabs in order.
    pub tabs: Vec<Tab>,
    /// Tab groups.
    #[serde(default)]
    pub groups: Vec<TabGroup>,
    /// Index of the active tab.
    #[serde(default)]
    pub active_tab: u16,
}

/// A set of windows: one device's open windows, or a saved workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layout {
    /// Windows in order.
    pub windows: Vec<Window>,
}

const LAYOUT_FORMAT: u8 = 0x71;
const MAX_WINDOWS: u8 = 64;
const MAX_TABS: u16 = 2048;
const MAX_GROUPS: u16 = 256;

impl Layout {
    /// Checks the limits a layout must keep to be stored.
    pub(crate) fn check(&self) -> Result<(), DecodeError> {
        let too = |what, len: usize, max: u64| DecodeError::TooLarge { what, len: len as u64, max };
        if self.windows.len() > usize::from(MAX_WINDOWS) {
            return Err(too("windows", self.windows.len(), MAX_WINDOWS.into()));
        }
        for w in &self.windows {
            if w.tabs.len() > usize::from(MAX_TABS) {
                return Err(too("tabs", w.tabs.len(), MAX_TABS.into()));
            }
            if w.groups.len() > usize::from(MAX_GROUPS) {
                return Err(too("tab groups", w.groups.len(), MAX_GROUPS.into()));
            }
            for t in &w.tabs {
                crate::model::schema::check_text(&t.url, MAX_URL_LEN, "tab url")?;
                crate::model::schema::check_text(&t.title, MAX_TITLE_LEN, "tab title")?;
            }
            for g in &w.groups {
                if g.title.len() > 255 || g.color.len() > 255 {
                    return Err(too("tab group title", g.title.len().max(g.color.len()), 255));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(LAYOUT_FORMAT).u8(u8::try_from(self.windows.len()).unwrap_or(MAX_WINDOWS));
        for window in self.windows.iter().take(MAX_WINDOWS.into()) {
            w.u16(window.active_tab).u16(u16::try_from(window.groups.len()).unwrap_or(MAX_GROUPS));
            for g in window.groups.iter().take(MAX_GROUPS.into()) {
                w.bytes_u8(g.title.as_bytes()).bytes_u8(g.color.as_bytes()).u8(u8::from(g.collapsed));
            }
            w.u16(u16::try_from(window.tabs.len()).unwrap_or(MAX_TABS));
            for t in window.tabs.iter().take(MAX_TABS.into()) {
                w.bytes_u16(t.url.as_bytes()).bytes_u16(t.title.as_bytes()).u8(u8::from(t.pinned));
                match t.group {
                    Some(g) => w.u8(1).u16(g),
                    None => w.u8(0),
                };
            }
        }
        w.into_bytes()
    }

    /// Decodes an untrusted layout.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.format("layout", LAYOUT_FORMAT)?;
        let windows = r.u8("window count")?;
        if windows > MAX_WINDOWS {
            return Err(DecodeError::TooLarge { what: "windows", len: windows.into(), max: MAX_WINDOWS.into() });
        }
        let mut out = Layout::default();
        for _ in 0..windows {
            let active_tab = r.u16("active tab")?;
            let groups = r.u16("group count")?;
            let groups = r.check_len(groups.into(), MAX_GROUPS.into(), "group count")?;
            let mut window = Window { active_tab, ..Window::default() };
            for _ in 0..groups {
                let title = r.str_u8(255, "group title")?.to_owned();
                let color = r.str_u8(255, "group color")?.to_owned();
                let collapsed = r.u8("group collapsed")? != 0;
                window.groups.push(TabGroup { title, color, collapsed });
            }
            let tabs = r.u16("tab count")?;
            let tabs = r.check_len(tabs.into(), MAX_TABS.into(), "tab count")?;
            for _ in 0..tabs {
                let url = r.str_u16(MAX_URL_LEN, "tab url")?.to_owned();
                let title = r.str_u16(MAX_TITLE_LEN, "tab title")?.to_owned();
                let pinned = r.u8("tab pinned")? != 0;
                let group = match r.u8("tab group flag")? {
                    0 => None,
                    1 => Some(r.u16("tab group")?),
                    tag => return Err(DecodeError::UnknownTag { what: "tab group flag", tag }),
                };
                window.tabs.push(Tab { url, title, pinned, group });
            }
            out.windows.push(window);
        }
        r.finish("layout")?;
        Ok(out)
    }
}

/// A saved, shared workspace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedWorkspace {
    /// Stable ID.
    #[serde(serialize_with = "crate::model::json::item_id")]
    pub id: ItemId,
    /// Name.
    pub name: String,
    /// Its windows and tabs.
    pub layout: Layout,
    /// Last change, Unix ms.
    pub changed_ms: u64,
}

pub(crate) fn named_workspace(id: ItemId, fields: &Fields<'_>, now_ms: u64, skew: u64) -> NamedWorkspace {
    NamedWorkspace {
        id,
        name: text(fields, "name", MAX_TITLE_LEN, now_ms, skew),
        layout: current(fields, "layout", now_ms, skew)
            .and_then(|v| Layout::decode(v.value()).ok())
            .unwrap_or_default(),
        changed_ms: changed(fields, now_ms, skew).0,
    }
}
