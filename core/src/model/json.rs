//! Serde helpers: IDs in their text form in JSON views.

use serde::Serializer;

use crate::identity::DeviceId;
use crate::model::schema::ItemId;

pub(crate) fn item_id<S: Serializer>(id: &ItemId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

pub(crate) fn item_ids<S: Serializer>(ids: &[ItemId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(ToString::to_string))
}

pub(crate) fn device_id<S: Serializer>(id: &DeviceId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}
