//! Legacy usage snapshots, streamed: `{"usage":{"apis":…}}` (legacy usage
//! export) and `{"apis":…}` (legacy usage payload), the shape CPA's old
//! in-memory statistics had:
//! `apis.<endpoint>.models.<model>.details[]`, each detail one request.
//!
//! The walk is a chain of serde seeds, so only one detail is in memory at a
//! time whatever the snapshot's size. Counting follows the Go server: an
//! endpoint, model or detail that is not an object (or an endpoint without
//! `models`, or a detail without a timestamp) is `failed`; a model without
//! details is `unsupported`.
//!
//! A detail becomes a CPA-style record: the endpoint key is its endpoint, the
//! model key its requested model unless the detail names one, and a missing
//! request id is `legacy:` + 16 hex digits of a SHA-256 over the detail's
//! endpoint, model, position, timestamp and raw JSON, so importing the same
//! snapshot twice yields the same events (and adds nothing the second time).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{ImportError, ImportFormat, Location, Reader};
use crate::decode::decode_object;
use crate::decode::json::{self, Json};
use crate::decode::redact::sha256_hex;

/// Context shared by every level of the walk.
pub(super) struct TopSeed<'a, 'r, 's> {
    pub(super) reader: &'a mut Reader<'r, 's>,
    pub(super) stop: &'a mut Option<ImportError>,
}

/// Generates the visitor methods for values that are not objects: each calls
/// `self.not_object()` after consuming the value.
macro_rules! not_an_object {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            self.not_object();
            Ok(())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            self.not_object();
            Ok(())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            self.not_object();
            Ok(())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            self.not_object();
            Ok(())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            self.not_object();
            Ok(())
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            self.not_object();
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            self.not_object();
            Ok(())
        }
    };
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a usage snapshot object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let format = match key.as_ref() {
                "usage" => ImportFormat::LegacyUsageExport,
                "apis" => ImportFormat::LegacyUsagePayload,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            // A pre-classified snapshot reads only its own key.
            let wanted = self.reader.report.format;
            if wanted
                .is_some_and(|wanted| wanted != ImportFormat::UsageServiceJsonl && wanted != format)
            {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            self.reader.report.format = Some(format);
            let walk = Walk {
                reader: &mut *self.reader,
                stop: &mut *self.stop,
            };
            if format == ImportFormat::LegacyUsageExport {
                map.next_value_seed(UsageSeed(walk))?;
            } else {
                map.next_value_seed(ApisSeed(walk))?;
            }
        }
        Ok(())
    }
}

struct Walk<'a, 'r, 's> {
    reader: &'a mut Reader<'r, 's>,
    stop: &'a mut Option<ImportError>,
}

impl<'r, 's> Walk<'_, 'r, 's> {
    fn again(&mut self) -> Walk<'_, 'r, 's> {
        Walk {
            reader: &mut *self.reader,
            stop: &mut *self.stop,
        }
    }

    /// Turns one detail into an event (or a failed count).
    fn detail<E: de::Error>(
        &mut self,
        endpoint: &str,
        model: &str,
        index: u64,
        raw: &str,
    ) -> Result<(), E> {
        let location = Location::Legacy {
            endpoint: endpoint.to_string(),
            model: Some(model.to_string()),
            detail: Some(index),
        };
        let value = match json::parse(raw) {
            Ok(value) => value,
            Err(error) => {
                self.reader.report.fail(location, error.to_string());
                return Ok(());
            }
        };
        let Json::Object(detail) = value else {
            self.reader
                .report
                .fail(location, "detail is not a JSON object".to_string());
            return Ok(());
        };
        let Some(timestamp) = ["timestamp", "time", "created_at", "createdAt"]
            .iter()
            .find_map(|key| json::member(&detail, key))
            .filter(|value| **value != Json::Null)
        else {
            self.reader.report.fail(
                location,
                "detail has no timestamp (timestamp, time, created_at or createdAt)".to_string(),
            );
            return Ok(());
        };
        let mut timestamp_text = String::new();
        json::write_compact(&mut timestamp_text, timestamp);
        let mut members = detail.clone();
        members.push((
            Cow::Borrowed("endpoint"),
            Json::String(Cow::Borrowed(endpoint)),
        ));
        let names_model = ["requested_model", "requestedModel", "alias"]
            .iter()
            .any(|key| json::member(&detail, key).is_some_and(|value| *value != Json::Null));
        if !names_model {
            members.push((
                Cow::Borrowed("requested_model"),
                Json::String(Cow::Borrowed(model)),
            ));
        }
        let has_request_id = ["request_id", "requestId", "id"].iter().any(|key| {
            matches!(json::member(&detail, key), Some(Json::String(text)) if !text.trim().is_empty())
        });
        if !has_request_id {
            let digest = sha256_hex(&format!(
                "legacy|{endpoint}|{model}|{index}|{timestamp_text}|{raw}"
            ));
            members.push((
                Cow::Borrowed("request_id"),
                Json::String(Cow::Owned(format!("legacy:{}", &digest[..16]))),
            ));
        }
        match decode_object(&members, self.reader.now_ms) {
            Ok(event) => {
                if let Err(error) = self.reader.emit(event) {
                    *self.stop = Some(error);
                    return Err(E::custom("import stopped"));
                }
            }
            Err(reason) => self.reader.report.fail(location, reason),
        }
        Ok(())
    }
}

/// The value of `usage`: an object whose `apis` is walked.
struct UsageSeed<'a, 'r, 's>(Walk<'a, 'r, 's>);

impl<'de> DeserializeSeed<'de> for UsageSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl UsageSeed<'_, '_, '_> {
    fn not_object(self) {}
}

impl<'de> Visitor<'de> for UsageSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("the usage object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "apis" {
                map.next_value_seed(ApisSeed(self.0.again()))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    not_an_object!();
}

/// `apis`: endpoint key → endpoint object.
struct ApisSeed<'a, 'r, 's>(Walk<'a, 'r, 's>);

impl<'de> DeserializeSeed<'de> for ApisSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ApisSeed<'_, '_, '_> {
    fn not_object(self) {}
}

impl<'de> Visitor<'de> for ApisSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("the apis object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(endpoint) = map.next_key::<Cow<'de, str>>()? {
            map.next_value_seed(EndpointSeed {
                walk: self.0.again(),
                endpoint: &endpoint,
            })?;
        }
        Ok(())
    }

    not_an_object!();
}

/// One endpoint: `{"models": {…}}`.
struct EndpointSeed<'a, 'r, 's, 'k> {
    walk: Walk<'a, 'r, 's>,
    endpoint: &'k str,
}

impl<'de> DeserializeSeed<'de> for EndpointSeed<'_, '_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl EndpointSeed<'_, '_, '_, '_> {
    fn not_object(self) {
        self.walk.reader.report.fail(
            Location::Legacy {
                endpoint: self.endpoint.to_string(),
                model: None,
                detail: None,
            },
            "endpoint is not a JSON object".to_string(),
        );
    }
}

impl<'de> Visitor<'de> for EndpointSeed<'_, '_, '_, '_> {
    type Value = ();
    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an endpoint object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut has_models = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "models" {
                has_models = true;
                map.next_value_seed(ModelsSeed {
                    walk: self.walk.again(),
                    endpoint: self.endpoint,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !has_models {
            self.walk.reader.report.fail(
                Location::Legacy {
                    endpoint: self.endpoint.to_string(),
                    model: None,
                    detail: None,
                },
                "endpoint has no models".to_string(),
            );
        }
        Ok(())
    }

    not_an_object!();
}

/// `models`: model key → model object.
struct ModelsSeed<'a, 'r, 's, 'k> {
    walk: Walk<'a, 'r, 's>,
    endpoint: &'k str,
}

impl<'de> DeserializeSeed<'de> for ModelsSeed<'_, '_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ModelsSeed<'_, '_, '_, '_> {
    fn not_object(self) {
        self.walk.reader.report.fail(
            Location::Legacy {
                endpoint: self.endpoint.to_string(),
                model: None,
                detail: None,
            },
            "models is not a JSON object".to_string(),
        );
    }
}

impl<'de> Visitor<'de> for ModelsSeed<'_, '_, '_, '_> {
    type Value = ();
    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a models object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(model) = map.next_key::<Cow<'de, str>>()? {
            map.next_value_seed(ModelSeed {
                walk: self.walk.again(),
                endpoint: self.endpoint,
                model: &model,
            })?;
        }
        Ok(())
    }

    not_an_object!();
}

/// One model: `{"details": [...]}`.
struct ModelSeed<'a, 'r, 's, 'k> {
    walk: Walk<'a, 'r, 's>,
    endpoint: &'k str,
    model: &'k str,
}

impl<'de> DeserializeSeed<'de> for ModelSeed<'_, '_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ModelSeed<'_, '_, '_, '_> {
    fn not_object(self) {
        self.walk.reader.report.fail(
            Location::Legacy {
                endpoint: self.endpoint.to_string(),
                model: Some(self.model.to_string()),
                detail: None,
            },
            "model is not a JSON object".to_string(),
        );
    }
}

impl<'de> Visitor<'de> for ModelSeed<'_, '_, '_, '_> {
    type Value = ();
    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a model object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut details = 0_u64;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "details" {
                details += map.next_value_seed(DetailsSeed {
                    walk: self.walk.again(),
                    endpoint: self.endpoint,
                    model: self.model,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if details == 0 {
            self.walk.reader.report.unsupported += 1;
        }
        Ok(())
    }

    not_an_object!();
}

/// `details`: the array of requests. Yields how many elements it had.
struct DetailsSeed<'a, 'r, 's, 'k> {
    walk: Walk<'a, 'r, 's>,
    endpoint: &'k str,
    model: &'k str,
}

impl<'de> DeserializeSeed<'de> for DetailsSeed<'_, '_, '_, '_> {
    type Value = u64;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DetailsSeed<'_, '_, '_, '_> {
    type Value = u64;
    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a details array")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<u64, A::Error> {
        let mut index = 0_u64;
        while let Some(raw) = seq.next_element::<Box<serde_json::value::RawValue>>()? {
            index += 1;
            self.walk
                .detail::<A::Error>(self.endpoint, self.model, index, raw.get())?;
        }
        Ok(index)
    }

    // Anything but an array counts as "no details".
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(0)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }
}
