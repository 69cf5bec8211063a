//! What the file-reader fuzz targets share: the first byte of an input chooses the reader's
//! options (schema, good-rows copy, CSV dialect); the rest is the uploaded file.

use std::path::PathBuf;
use std::sync::OnceLock;

use batchdrop_emulator::fuzzing::{self, Format, Schema};

/// A schema with a field of every kind and constraint the emulator checks.
const EVERY_KIND: &str = r#"{
  "$id": "https://ns.example.com/fuzz",
  "type": "object",
  "required": ["id"],
  "properties": {
    "id": {"type": "string", "minLength": 1, "maxLength": 64},
    "n": {"type": "integer", "minimum": -5, "maximum": 1000000},
    "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1e300},
    "ok": {"type": "boolean"},
    "nothing": {"type": "null"},
    "kind": {"type": "string", "enum": ["a", "b"]},
    "at": {"type": "string", "format": "date-time"},
    "day": {"type": "string", "format": "date"},
    "mail": {"type": "string", "format": "email"},
    "link": {"type": "string", "format": "uri"},
    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 0, "maxItems": 3},
    "person": {
      "type": "object",
      "additionalProperties": false,
      "properties": {"name": {"type": "object", "properties": {"first": {"type": "string"}}}}
    },
    "map": {"type": "object", "additionalProperties": {"type": "integer"}},
    "a.b": {"type": "string"}
  }
}"#;

fn schemas() -> &'static [Schema; 2] {
    static SCHEMAS: OnceLock<[Schema; 2]> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let compile = |text: &str| {
            fuzzing::schema(&serde_json::from_str(text).expect("schema JSON"))
                .expect("the schema compiles")
        };
        [
            compile(EVERY_KIND),
            compile(include_str!("../../tests/fixtures/objectXDM.schema.json")),
        ]
    })
}

/// Tmpfs when there is one: each input is written as a file, as an upload would be.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        }
    })
}

/// Reads `data[1..]` with the reader `format` picks, options from `data[0]`.
pub fn read(data: &[u8], format: fn(u8) -> Format) {
    // The emulator catches the Parquet crate's panics on malformed files (they are file
    // errors); libfuzzer-sys's hook would abort on them all the same. A panic that escapes
    // the emulator still aborts: libfuzzer-sys catches it around every input.
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("caught? {info}"))));
    let Some((&options, file)) = data.split_first() else {
        return;
    };
    let schema = match (options >> 1) & 3 {
        1 => Some(&schemas()[0]),
        2 => Some(&schemas()[1]),
        _ => None,
    };
    let dir = tempfile::tempdir_in(scratch()).expect("a temp dir");
    fuzzing::read_file(dir.path(), file, format(options), schema, options & 1 == 1);
}

/// CSV dialects from the option byte's high bits.
pub fn csv(options: u8) -> Format {
    Format::Csv {
        delimiter: [b',', b';', b'\t', b'|'][usize::from(options >> 3 & 3)],
        quote: if options & 0x20 == 0 { b'"' } else { b'\'' },
        escape: (options & 0x40 != 0).then_some(b'\\'),
        header: options & 0x80 == 0,
    }
}
