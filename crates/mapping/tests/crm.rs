//! The guide's sample pair, end to end through the crate: `CRM_profiles.csv` mapped with the
//! committed mapping set (`tests/fixtures/CRM_profiles.mapping.json`) against
//! `CRM_profiles.json`, the schema's length rules, the Parquet output read back, and the other
//! input formats.

#[path = "../../../tests/support/records.rs"]
mod records;

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int16Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use batchdrop_mapping::{
    InputFormat, Mapper, MappingSet, Options, Output, OutputFormat, ReasonKind, Rejection, Schema,
    Summary, map_file,
};
use records::{assert_same, json_lines};
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn mapping_set() -> MappingSet {
    MappingSet::from_json(&std::fs::read(fixture("CRM_profiles.mapping.json")).unwrap()).unwrap()
}

fn schema(name: &str) -> Schema {
    Schema::compile(&serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap())
        .unwrap()
}

/// Maps a fixture into memory; returns the summary, the output bytes and the rejections.
fn map(
    mapper: &Mapper,
    input: &std::path::Path,
    format: OutputFormat,
) -> (Summary, Vec<u8>, Vec<Rejection>) {
    let mut out = Vec::new();
    let mut rejections = Vec::new();
    let summary = map_file(
        mapper,
        input,
        &InputFormat::detect(input).unwrap(),
        Some(Output {
            format,
            writer: &mut out,
        }),
        &Options { preview_rows: 3 },
        &mut |r| rejections.push(r),
    )
    .unwrap();
    (summary, out, rejections)
}

/// Compares every field of the sample's first five records: person (name, gender, birth
/// day/month, date, year), identityMap (CRMID, ECID ×2, LOYALTYID with their `primary`),
/// homePhone, personalEmail and homeAddress with `_schema.latitude/longitude` (within 1e-6:
/// the sample rounds some coordinates differently from the CSV, e.g. -80.8108888 against
/// -80.8108885). The later sample records also carry an `Email` identity (from EMAIL2) that
/// the CSV-side mapping does not write, so they are not compared.
#[test]
fn the_csv_maps_to_the_sample_json_records() {
    let mapper = Mapper::new(mapping_set(), None);
    let (summary, out, rejections) = map(
        &mapper,
        &fixture("CRM_profiles.csv"),
        OutputFormat::JsonLines,
    );
    assert_eq!(rejections, vec![], "without a schema nothing is rejected");
    assert_eq!(
        (summary.rows_in, summary.rows_out, summary.rejected),
        (259, 259, 0)
    );
    let mapped = json_lines(&out);
    let sample: Vec<Value> =
        serde_json::from_slice(&std::fs::read(fixture("CRM_profiles.json")).unwrap()).unwrap();
    for i in 0..5 {
        assert_same(&sample[i], &mapped[i], &format!("record {}", i + 1));
    }
    // Typed by the expressions, not by a schema: an integer, doubles, booleans.
    assert_eq!(mapped[0]["person"]["birthYear"], json!(2004));
    assert!(mapped[0]["homeAddress"]["_schema"]["latitude"].is_f64());
    assert_eq!(
        mapped[0]["identityMap"]["LOYALTYID"][0]["primary"],
        json!(true)
    );
    // The preview is the first mapped records.
    assert_eq!(summary.preview.len(), 3);
    assert_eq!(summary.preview[1], mapped[1]);
}

/// The CSV rows whose F_NAME breaks objectXDM's firstName length limits (4 to 8 characters),
/// read from the file on its own (not through the mapper).
fn first_names_out_of_length() -> Vec<u64> {
    let mut reader = csv::Reader::from_path(fixture("CRM_profiles.csv")).unwrap();
    let column = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "F_NAME")
        .unwrap();
    reader
        .records()
        .enumerate()
        .filter(|(_, r)| {
            let n = r.as_ref().unwrap()[column].chars().count();
            !(4..=8).contains(&n)
        })
        .map(|(i, _)| i as u64 + 1)
        .collect()
}

#[test]
fn every_row_validates_against_the_schema_except_the_first_names_out_of_length() {
    let expected = first_names_out_of_length();
    assert_eq!(
        &expected[..3],
        &[4, 11, 13],
        "the rows the issue names come first"
    );
    assert_eq!(expected.len(), 32);
    for schema_file in ["objectXDM.schema.json", "CRM_profiles.schema.json"] {
        let mapper = Mapper::new(mapping_set(), Some(schema(schema_file)));
        let (summary, out, rejections) =
            map(&mapper, &fixture("CRM_profiles.csv"), OutputFormat::Parquet);
        let rows: Vec<u64> = rejections.iter().map(|r| r.row).collect();
        assert_eq!(rows, expected, "{schema_file}");
        for r in &rejections {
            assert_eq!(r.reasons.len(), 1, "{r:?}");
            assert_eq!(r.reasons[0].kind, ReasonKind::Schema);
            assert_eq!(r.reasons[0].field.as_deref(), Some("person.name.firstName"));
            assert!(r.reasons[0].message.contains("characters"), "{r:?}");
            assert_eq!(
                r.line,
                Some(r.row + 1),
                "one line per record, after the header"
            );
        }
        assert_eq!(
            (summary.rows_in, summary.rows_out, summary.rejected),
            (259, 227, 32)
        );
        assert_eq!(
            parquet_rows(&out)
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>(),
            227
        );
    }
    // The message says what is wrong with the value.
    let mapper = Mapper::new(mapping_set(), Some(schema("objectXDM.schema.json")));
    let (_, _, rejections) = map(
        &mapper,
        &fixture("CRM_profiles.csv"),
        OutputFormat::JsonLines,
    );
    assert_eq!(
        rejections[0].reasons[0].message,
        "person.name.firstName: \"Friederike\" has 10 characters; at most 8 are allowed"
    );
    assert_eq!(
        rejections[1].reasons[0].message,
        "person.name.firstName: \"Val\" has 3 characters; at least 4 are required"
    );
}

fn parquet_rows(bytes: &[u8]) -> Vec<RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(
        bytes.to_vec(),
    ))
    .unwrap()
    .build()
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn the_parquet_output_is_typed_by_the_schema_and_reads_back() {
    let mapper = Mapper::new(mapping_set(), Some(schema("CRM_profiles.schema.json")));
    assert!(mapper.warnings().is_empty(), "{:?}", mapper.warnings());
    let (_, out, _) = map(&mapper, &fixture("CRM_profiles.csv"), OutputFormat::Parquet);
    let batches = parquet_rows(&out);
    let batch = &batches[0];
    let schema = batch.schema();
    // Only the fields the mapping writes, typed by the schema; identityMap is a map.
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        vec![
            "person",
            "identityMap",
            "homePhone",
            "personalEmail",
            "homeAddress"
        ]
    );
    let person = batch.column(0).as_struct();
    let DataType::Struct(person_fields) = schema.field(0).data_type() else {
        panic!("person is a struct")
    };
    let person_names: Vec<&str> = person_fields.iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        person_names,
        vec![
            "name",
            "gender",
            "birthDayAndMonth",
            "birthDate",
            "birthYear"
        ]
    );
    assert_eq!(person.column(3).data_type(), &DataType::Date32);
    let years = person.column(4).as_primitive::<Int16Type>();
    assert_eq!(years.value(0), 2004, "birthYear is a short (meta:xdmType)");
    assert!(matches!(schema.field(1).data_type(), DataType::Map(_, _)));
    let address = batch.column(4).as_struct();
    let position = address.column_by_name("_schema").unwrap().as_struct();
    let latitude = position
        .column_by_name("latitude")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert!((latitude.value(0) - 33.708276).abs() < 1e-9);
    // The first row, back as JSON: the sample's first record, with the date normalised.
    let identities = batch.column(1).as_map().value(0);
    let keys: Vec<&str> = (0..identities.len())
        .map(|i| identities.column(0).as_string::<i32>().value(i))
        .collect();
    assert_eq!(keys, vec!["CRMID", "ECID", "LOYALTYID"]);
    let ecids = identities.column(1).as_list::<i32>().value(1);
    let ecid = ecids.as_struct();
    assert_eq!(ecid.len(), 2);
    assert_eq!(
        ecid.column_by_name("id")
            .unwrap()
            .as_string::<i32>()
            .value(1),
        "55019962992006103186215643814973128178"
    );
    assert!(
        !ecid
            .column_by_name("primary")
            .unwrap()
            .as_boolean()
            .value(1)
    );
}

#[test]
fn a_mapping_with_an_unknown_function_is_refused_with_its_name() {
    let text = std::fs::read_to_string(fixture("CRM_profiles.mapping.json"))
        .unwrap()
        .replace("to_integer(YOB)", "to_int(YOB)");
    let e = MappingSet::from_json(text.as_bytes()).unwrap_err();
    assert_eq!(e.function(), Some("to_int"));
    assert_eq!(e.destination(), Some("person.birthYear"));
    assert_eq!(e.index(), Some(6));
    assert!(e.to_string().contains("'to_int'"), "{e}");
}

/// The multi-line JSON sample, flattened back with `[*]` and expressions, from JSON and from
/// the Parquet the CSV mapping wrote.
#[test]
fn json_and_parquet_inputs_map_too() {
    let flatten = MappingSet::from_json(
        json!({"mappings": [
            {"sourceType": "ATTRIBUTE", "source": "person.name.firstName", "destination": "first"},
            {"sourceType": "ATTRIBUTE", "source": "identityMap.ECID[*].id", "destination": "ecids[*].id"},
            {"sourceType": "ATTRIBUTE", "source": "identityMap.ECID[*].primary", "destination": "ecids[*].primary"},
            {"sourceType": "EXPRESSION", "source": "concat(upper(person.name.lastName), ', ', person.name.firstName)",
             "destination": "label"},
            {"sourceType": "EXPRESSION", "source": "iif(homeAddress._schema.latitude > 30, 'north', 'south')",
             "destination": "band"},
            {"sourceType": "EXPRESSION", "source": "date_part('year', person.birthDate)", "destination": "year"},
            {"sourceType": "STATIC", "source": "sample", "destination": "origin"}
        ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let flatten = Mapper::new(flatten, None);
    let expected_first = json!({
        "first": "Ewart",
        "ecids": [{"id": "87098882279810196101440938110216748923", "primary": false},
                  {"id": "55019962992006103186215643814973128178", "primary": false}],
        "label": "BENNEDSEN, Ewart", "band": "north", "year": 2004, "origin": "sample"
    });
    let (summary, out, rejections) = map(
        &flatten,
        &fixture("CRM_profiles.json"),
        OutputFormat::JsonLines,
    );
    assert_eq!(rejections, vec![]);
    assert_eq!(summary.rows_in, 16);
    let rows = json_lines(&out);
    assert_eq!(rows[0], expected_first);

    let dir = tempfile::tempdir().unwrap();
    let staged = dir.path().join("crm.parquet");
    let crm = Mapper::new(mapping_set(), Some(schema("CRM_profiles.schema.json")));
    map_file(
        &crm,
        &fixture("CRM_profiles.csv"),
        &InputFormat::detect(&fixture("CRM_profiles.csv")).unwrap(),
        Some(Output {
            format: OutputFormat::Parquet,
            writer: std::fs::File::create(&staged).unwrap(),
        }),
        &Options::default(),
        &mut |_| {},
    )
    .unwrap();
    let (summary, out, rejections) = map(&flatten, &staged, OutputFormat::JsonLines);
    assert_eq!(rejections, vec![]);
    assert_eq!(summary.rows_in, 227);
    assert_eq!(json_lines(&out)[0], expected_first);
}

#[test]
fn rows_that_cannot_be_read_or_mapped_are_reported_and_the_rest_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("some.csv");
    std::fs::write(
        &input,
        "TITLE,F_NAME,L_NAME,GENDER,MONTH_AND_DATE,DOB,YOB,EMAIL,ID1,ID2,ID3,ID4,PHONE,EMAIL2,STREET,CITY,STATE,COUNTRY,ZIP,LAT,LONG\n\
         Mr,Anna,Lee,female,01-02,1990-01-02,1990,a@b.co,c1,e1,l1,e2,1,a@b.co,s,c,st,US,1,1.5,2.5\n\
         Mr,Bert,Lee,male,01-02,1990-01-02,nineteen,a@b.co,c1,e1,l1,e2,1,a@b.co,s,c,st,US,1,1.5,2.5\n\
         Mr,Carl\n\
         Mr,Dora,Lee,female,01-02,1990-01-02,1991,a@b.co,c1,e1,l1,e2,1,a@b.co,s,c,st,US,1,north,2.5\n\
         Ms,Emma,Lee,female,01-02,1990-01-02,1992,a@b.co,c1,e1,l1,e2,1,a@b.co,s,c,st,US,1,1.5,2.5\n",
    )
    .unwrap();
    let mapper = Mapper::new(mapping_set(), None);
    let (summary, out, rejections) = map(&mapper, &input, OutputFormat::Parquet);
    assert_eq!(
        (summary.rows_in, summary.rows_out, summary.rejected),
        (5, 2, 3)
    );
    let described: Vec<(u64, ReasonKind, String)> = rejections
        .iter()
        .map(|r| (r.row, r.reasons[0].kind, r.reasons[0].message.clone()))
        .collect();
    assert_eq!(described[0].0, 2);
    assert!(described[0].2.contains("to_integer") && described[0].2.contains("\"nineteen\""));
    assert_eq!(
        (described[1].0, described[1].1),
        (3, ReasonKind::Unreadable)
    );
    assert!(described[1].2.contains("2 fields where the header has 21"));
    assert_eq!(described[2].0, 4);
    assert!(
        described[2].2.contains("homeAddress._schema.latitude")
            && described[2].2.contains("to_decimal")
    );
    let batches = parquet_rows(&out);
    let first_names: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let name = b
                .column(0)
                .as_struct()
                .column(0)
                .as_struct()
                .column_by_name("firstName")
                .unwrap()
                .clone();
            let name: Arc<dyn Array> = name;
            (0..name.len())
                .map(|i| name.as_string::<i32>().value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(first_names, vec!["Anna", "Emma"]);
}

/// `map_seeing` hands over every byte of the file, once and in order, whatever the format
/// (trailing blank lines of JSON Lines, whitespace after a multi-line array, Parquet read by
/// seeking), with the same records as `map_file`.
#[test]
fn map_seeing_sees_every_byte_of_the_file_in_every_format() {
    let mapper = Mapper::new(mapping_set(), None);
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture("CRM_profiles.csv");
    let (_, parquet, _) = map(&mapper, &csv, OutputFormat::Parquet);
    let rows: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .take(5)
        .map(|_| r#"{"F_NAME":"Ann","ID1":"1"}"#.to_owned())
        .collect();
    let inputs: Vec<(PathBuf, InputFormat, Vec<u8>)> = vec![
        (
            csv.clone(),
            InputFormat::detect(&csv).unwrap(),
            std::fs::read(&csv).unwrap(),
        ),
        (
            dir.path().join("rows.json"),
            InputFormat::JsonLines,
            format!("{}\n\n  \n", rows.join("\n")).into_bytes(),
        ),
        (
            dir.path().join("array.json"),
            InputFormat::JsonMultiLine,
            format!("[\n{}\n]\n\n   ", rows.join(",\n")).into_bytes(),
        ),
        (
            dir.path().join("mapped.parquet"),
            InputFormat::Parquet,
            parquet,
        ),
    ];
    for (path, format, bytes) in inputs {
        if path.parent() == Some(dir.path()) {
            std::fs::write(&path, &bytes).unwrap();
        }
        let mut seen = Vec::new();
        let summary = batchdrop_mapping::map_seeing::<Vec<u8>>(
            &mapper,
            std::fs::File::open(&path).unwrap(),
            &path,
            &format,
            None,
            &Options::default(),
            &mut |_| {},
            Some(&mut |chunk: &[u8]| seen.extend_from_slice(chunk)),
        )
        .unwrap();
        assert!(
            seen == bytes,
            "{}: every byte, once, in order",
            path.display()
        );
        let plain = map_file::<Vec<u8>>(
            &mapper,
            &path,
            &format,
            None,
            &Options::default(),
            &mut |_| {},
        )
        .unwrap();
        assert!(summary.rows_in > 0, "{}: records were read", path.display());
        assert_eq!(summary.rows_in, plain.rows_in, "{}", path.display());
        assert_eq!(summary.rows_out, plain.rows_out, "{}", path.display());
    }
}
