//! The `result` event of each command under `--json`; with the progress events, the types of
//! `schemas/events.schema.json`.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde_json::Value;

use crate::manifest::{AwsRecord, Manifest, OutputFile};
use crate::s3::Uploaded;

/// What a command reports in its `result` event (the fields sit beside `schema` and `event`).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Outcome<'a> {
    /// `imgforge build`: the manifest written, less its `schema` (the event's stands there).
    #[serde(serialize_with = "without_schema")]
    #[schemars(schema_with = "manifest_without_schema")]
    Build(&'a Manifest),
    /// `imgforge publish` and `build --publish` (after the build's): the AMI record.
    Publish(&'a AwsRecord),
    /// `imgforge export`: the outputs written and uploaded.
    Export(&'a Exported),
    /// `imgforge build` with nothing to build: the registry record that is up to date.
    UpToDate(&'a crate::registry::Record),
    /// `imgforge bake`: every image's outcome.
    Bake(&'a Baked),
}

/// The result of `imgforge bake`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Baked {
    /// Each image of the plan, in plan order.
    pub nodes: Vec<crate::bakery::bake::Done>,
}

/// The result of `imgforge export`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Exported {
    /// Files written (SHA-256 empty unless computed).
    pub outputs: Vec<OutputFile>,
    /// Files uploaded with `--upload`.
    pub uploaded: Vec<Uploaded>,
}

/// The manifest's fields but `schema`: one `schema` key per line, the event schema's.
fn without_schema<S: serde::Serializer>(m: &&Manifest, s: S) -> Result<S::Ok, S::Error> {
    let mut v = serde_json::to_value(m).map_err(serde::ser::Error::custom)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("schema");
    }
    v.serialize(s)
}

/// The schema of [`without_schema`]'s output.
fn manifest_without_schema(g: &mut SchemaGenerator) -> Schema {
    let mut s = Manifest::json_schema(g);
    if let Some(p) = s.get_mut("properties").and_then(Value::as_object_mut) {
        p.remove("schema");
    }
    if let Some(r) = s.get_mut("required").and_then(Value::as_array_mut) {
        r.retain(|k| k != "schema");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{assert_schema_fresh, schema_text};
    use crate::progress::{EVENT_SCHEMA, Envelope, Event};

    #[test]
    fn events_schema_is_fresh() {
        assert_schema_fresh("events.schema.json", &schema_text::<Envelope<Outcome<'static>>>());
    }

    fn line(event: Event<Outcome<'_>>) -> String {
        serde_json::to_string(&Envelope { schema: EVENT_SCHEMA, event }).unwrap()
    }

    /// The lines are those the hand-built `json!` events wrote, field for field.
    #[test]
    fn events_keep_their_json_shape() {
        let shapes = [
            (
                Event::Step { step: "seal".into(), message: "sealing".into() },
                r#"{"schema":1,"event":"step","step":"seal","message":"sealing"}"#,
            ),
            (Event::StepDone { step: "seal".into(), seconds: 1.5 }, r#"{"schema":1,"event":"step_done","step":"seal","seconds":1.5}"#),
            (Event::Notice { message: "careful".into() }, r#"{"schema":1,"event":"notice","message":"careful"}"#),
            (
                Event::Output { provisioner: "shell".into(), line: "hi".into() },
                r#"{"schema":1,"event":"output","provisioner":"shell","line":"hi"}"#,
            ),
        ];
        for (event, want) in shapes {
            assert_eq!(line(event), want);
        }
        let exported = Exported { outputs: Vec::new(), uploaded: Vec::new() };
        assert_eq!(line(Event::Result(Outcome::Export(&exported))), r#"{"schema":1,"event":"result","outputs":[],"uploaded":[]}"#);
        let m = Manifest { name: "web".into(), ..Manifest::default() };
        let v: serde_json::Value = serde_json::from_str(&line(Event::Result(Outcome::Build(&m)))).unwrap();
        let mut want = serde_json::to_value(&m).unwrap();
        want["schema"] = serde_json::json!(EVENT_SCHEMA);
        want["event"] = serde_json::json!("result");
        assert_eq!(v, want, "the manifest's fields beside schema and event");
        let text = line(Event::Result(Outcome::Build(&m)));
        assert_eq!(text.matches("\"schema\":").count(), 1, "one schema key: {text}");
        assert!(text.starts_with(r#"{"schema":1,"event":"result","#), "{text}");
    }
}
