use super::*;
use crate::format::Format;

#[test]
fn the_example_config_parses_with_documented_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let config = Config::load(&path).expect("config.example.toml must parse");
    assert!(matches!(
        config.platform.endpoint,
        Endpoint::Embedded { .. }
    ));
    assert_eq!(config.watches.len(), 1);
    let w = &config.watches[0];
    assert_eq!(w.dataset, "demo");
    assert_eq!(w.max_files, 1500);
    assert_eq!(w.settle, Duration::from_secs(1));
    assert_eq!(w.after_success, AfterSuccess::Archive);
    assert_eq!(config.upload.large_file_threshold, PLATFORM_MAX_PUT);
    assert_eq!(config.upload.chunk_size, 64 * 1024 * 1024);
    assert!(w.path.ends_with("var/drop") && w.path.is_absolute());
    assert_eq!(w.archive_dir, w.path.join("_archive"));
    assert_eq!(w.max_file_bytes, RECOMMENDED_MAX_BYTES);
    assert!(!w.refuse_sparse);
    assert_eq!((w.min_batch_bytes, w.max_hold), (0, DEFAULT_MAX_HOLD));
    assert_eq!(w.seal_bytes, DEFAULT_SEAL_BYTES);
}

#[test]
fn the_file_size_cap_and_sparse_refusal_are_per_watch() {
    let p = Path::new("/etc/batchdrop.toml");
    let text = "[defaults]\nmax_file_bytes = 1000\n[[watch]]\npath='a'\ndataset='d'\n[[watch]]\npath='b'\ndataset='d'\nmax_file_bytes = 10\nrefuse_sparse = true\n";
    let c = Config::parse(text, p).unwrap();
    assert_eq!(c.watches[0].max_file_bytes, 1000);
    assert!(!c.watches[0].refuse_sparse);
    assert_eq!(c.watches[1].max_file_bytes, 10);
    assert!(c.watches[1].refuse_sparse);
    let err = Config::parse("[[watch]]\npath='a'\ndataset='d'\nmax_file_bytes=0\n", p).unwrap_err();
    assert!(err.to_string().contains("max_file_bytes"), "{err}");
}

#[test]
fn unknown_keys_and_limits_beyond_the_platform_are_refused() {
    let p = Path::new("/etc/batchdrop.toml");
    let err = Config::parse("[[watch]]\npath='a'\ndataset='d'\nmax_filez=3\n", p).unwrap_err();
    assert!(err.to_string().contains("max_filez"), "{err}");
    let err = Config::parse("[[watch]]\npath='a'\ndataset='d'\nmax_files=25001\n", p).unwrap_err();
    assert!(
        err.to_string().contains("max_files = 25001") && err.to_string().contains("25000"),
        "{err}"
    );
    let err = Config::parse("[[watch]]\npath='a'\ndataset='d'\nsettle='soon'\n", p).unwrap_err();
    assert!(err.to_string().contains("not a duration"), "{err}");
    let err = Config::parse("", p).unwrap_err();
    assert!(err.to_string().contains("[[watch]]"), "{err}");
}

#[test]
fn per_watch_settings_override_defaults_and_paths_resolve_against_the_config() {
    let text = r#"
        [defaults]
        max_files = 10
        after_success = "delete"
        [[watch]]
        path = "in/a"
        dataset = "d1"
        [[watch]]
        path = "/abs/b"
        dataset = "d2"
        max_files = 3
        format = "csv"
        archive_dir = "/elsewhere/archive"
    "#;
    let c = Config::parse(text, Path::new("/etc/bd/config.toml")).unwrap();
    assert_eq!(c.watches[0].path, Path::new("/etc/bd/in/a"));
    assert_eq!(c.watches[0].max_files, 10);
    assert_eq!(c.watches[0].after_success, AfterSuccess::Delete);
    assert_eq!(c.watches[1].max_files, 3);
    assert_eq!(c.watches[1].format, Some(Format::Csv));
    assert_eq!(c.watches[1].archive_dir, Path::new("/elsewhere/archive"));
    assert_eq!(c.state_dir, Path::new("/etc/bd/var/state"));
}

#[test]
fn an_inline_secret_in_a_readable_config_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = "[platform]\nendpoint = \"https://platform.example\"\n[platform.auth]\nclient_id = \"id\"\nclient_secret = \"s3cr3t-value\"\n[[watch]]\npath = \"d\"\ndataset = \"x\"\n";
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    assert!(
        !err.contains("s3cr3t-value"),
        "the secret is never echoed: {err}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.platform.api_key, "id");
    assert!(
        !format!("{c:?}").contains("s3cr3t-value"),
        "Debug never shows the secret"
    );
}

#[test]
fn a_typo_inside_a_watch_points_at_the_key() {
    let p = Path::new("/etc/batchdrop.toml");
    let text =
        "[defaults]\nsettle = \"1s\"\n\n[[watch]]\npath = 'a'\ndataset = 'd'\nmax_filez = 3\n";
    let err = Config::parse(text, p).unwrap_err().to_string();
    assert!(err.contains("line 7") && err.contains("max_filez"), "{err}");
    let err = Config::parse(
        "[defaults]\nsetle = \"1s\"\n[[watch]]\npath='a'\ndataset='d'\n",
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 2") && err.contains("setle"), "{err}");
}

#[test]
fn durations_and_sizes_take_units_and_integers_stay_bytes() {
    let p = Path::new("/etc/batchdrop.toml");
    let text = r#"
        [limits]
        max_inflight_bytes = "2TB"
        [upload]
        chunk_size = "64MiB"
        large_file_threshold = 1000
        max_retry_age = "1h30m"
        [defaults]
        max_bytes = "100GB"
        [[watch]]
        path = "a"
        dataset = "d"
        max_file_bytes = "1.5 GB"
        settle = "1m 30s"
    "#;
    let c = Config::parse(text, p).unwrap();
    assert_eq!(c.limits.max_inflight_bytes, 2_000_000_000_000);
    assert_eq!(c.upload.chunk_size, 64 * 1024 * 1024);
    assert_eq!(c.upload.large_file_threshold, 1000);
    assert_eq!(c.upload.max_retry_age, Duration::from_secs(5400));
    assert_eq!(c.watches[0].max_bytes, RECOMMENDED_MAX_BYTES);
    assert_eq!(c.watches[0].max_file_bytes, 1_500_000_000);
    assert_eq!(c.watches[0].settle, Duration::from_secs(90));
    // Above the platform's limit, in units: still refused with the key.
    let err = Config::parse("[[watch]]\npath='a'\ndataset='d'\nmax_bytes='1001GB'\n", p)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_bytes"), "{err}");
    let err = Config::parse(
        "[upload]\nchunk_size = 'big'\n[[watch]]\npath='a'\ndataset='d'\n",
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("line 2") && err.contains("\"big\" is not a size"),
        "{err}"
    );
}

#[test]
fn include_and_exclude_are_per_watch_over_defaults() {
    let p = Path::new("/etc/batchdrop.toml");
    let text = r#"
        [defaults]
        exclude = ["*.bak"]
        [[watch]]
        path = "a"
        dataset = "d"
        [[watch]]
        path = "b"
        dataset = "d"
        include = ["*.csv"]
        exclude = []
    "#;
    let c = Config::parse(text, p).unwrap();
    assert!(!c.watches[0].patterns.selects("x/y.bak"));
    assert!(c.watches[0].patterns.selects("y.json"));
    assert!(c.watches[1].patterns.selects("y.bak.csv"));
    assert!(!c.watches[1].patterns.selects("y.json"));
    let err = Config::parse("[[watch]]\npath='a'\ndataset='d'\ninclude=['a[']\n", p)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[[watch]] a: include pattern \"a[\""), "{err}");
}

#[test]
fn environment_variables_are_interpolated_and_a_missing_one_is_named() {
    let p = Path::new("/etc/batchdrop.toml");
    // PATH is set wherever tests run; the other name is set nowhere.
    let path = std::env::var("PATH").unwrap();
    let text = "[[watch]]\npath = 'a'\ndataset = \"${PATH}\"\nformat = \"${BATCHDROP_TEST_UNSET_VARIABLE:-csv}\"\n";
    let c = Config::parse(text, p).unwrap();
    assert_eq!(c.watches[0].dataset, path);
    assert_eq!(c.watches[0].format, Some(Format::Csv));
    let text = "[[watch]]\npath = 'a'\n\ndataset = \"${BATCHDROP_TEST_UNSET_VARIABLE}\"\n";
    let err = Config::parse(text, p).unwrap_err();
    assert!(matches!(err, ConfigError::Environment { .. }), "{err:?}");
    let err = err.to_string();
    assert!(
        err.contains("/etc/batchdrop.toml")
            && err.contains("line 4")
            && err.contains("BATCHDROP_TEST_UNSET_VARIABLE"),
        "{err}"
    );
    // A value that breaks the TOML is not quoted back in the error: it may be a secret.
    let text = "[[watch]]\npath = 'a'\ndataset = 'd'\nmax_files = ${PATH}\n";
    let err = Config::parse(text, p).unwrap_err().to_string();
    assert!(!err.contains(&path) && err.contains("${PATH}"), "{err}");
}

#[test]
fn an_out_of_range_value_is_refused_with_its_key() {
    let p = Path::new("/etc/batchdrop.toml");
    let err = Config::parse(
        "[[watch]]\npath='a'\ndataset='d'\nmax_wait='99999999999999999999999h'\n",
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("max_wait") && err.contains("365 days"),
        "{err}"
    );
    let err = Config::parse(
        "shutdown_grace = '18446744073709551615s'\n[[watch]]\npath='a'\ndataset='d'\n",
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("shutdown_grace"), "{err}");
    let err = Config::parse(
        "[limits]\nmax_queued_files = 18446744073709551615\n[[watch]]\npath='a'\ndataset='d'\n",
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("max_queued_files"), "{err}");
}

const WATCH: &str = "[[watch]]\npath = \"d\"\ndataset = \"x\"\n";

#[test]
fn a_url_endpoint_carries_exactly_one_kind_of_credentials() {
    let p = Path::new("/etc/bd/config.toml");
    let url = "[platform]\nendpoint = \"https://platform.example/\"\n";
    let c = Config::parse(&format!("{url}access_token_file = \"token\"\n{WATCH}"), p).unwrap();
    match c.platform.endpoint {
        Endpoint::Url {
            url,
            credentials: Credentials::TokenFile(file),
        } => {
            assert_eq!(url, "https://platform.example");
            assert_eq!(file, Path::new("/etc/bd/token"));
        }
        other => panic!("{other:?}"),
    }
    let auth = "[platform.auth]\nclient_id = \"id\"\nscopes = [\"openid\", \"AdobeID\"]\nclient_secret_file = \"secret\"\n";
    let c = Config::parse(&format!("{url}{auth}{WATCH}"), p).unwrap();
    match &c.platform.endpoint {
        Endpoint::Url {
            credentials: Credentials::OAuth(o),
            ..
        } => {
            assert_eq!(o.scopes, "openid,AdobeID");
            assert!(matches!(&o.secret, SecretSource::File(f) if f == Path::new("/etc/bd/secret")));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.platform.api_key, "id", "api_key defaults to client_id");

    let err = |text: String| Config::parse(&text, p).unwrap_err().to_string();
    let both = err(format!("{url}access_token_file = \"t\"\n{auth}{WATCH}"));
    assert!(both.contains("keep one"), "{both}");
    let none = err(format!("{url}{WATCH}"));
    assert!(none.contains("needs credentials"), "{none}");
    let embedded = err(format!("[platform]\naccess_token_file = \"t\"\n{WATCH}"));
    assert!(embedded.contains("needs no credentials"), "{embedded}");
    let ims = err(format!(
        "{url}[platform.auth]\nclient_id = \"id\"\nims_url = \"ims.example\"\nclient_secret_file = \"s\"\n{WATCH}"
    ));
    assert!(ims.contains("ims_url"), "{ims}");
    let scopes_as_text = err(format!(
        "{url}[platform.auth]\nclient_id = \"id\"\nscopes = \"openid\"\nclient_secret_file = \"s\"\n{WATCH}"
    ));
    assert!(scopes_as_text.contains("scopes"), "{scopes_as_text}");
}

/// `text` with the commented-out lines `# LINE` made live, for each LINE starting with one
/// of `starts` (each must be there: an example that changes is looked at again).
fn uncomment(text: &str, starts: &[&str]) -> String {
    let mut out = text.to_owned();
    for start in starts {
        let line = text
            .lines()
            .find(|l| l.strip_prefix("# ").is_some_and(|l| l.starts_with(start)))
            .unwrap_or_else(|| panic!("no commented line `# {start}...`"));
        out = out.replace(line, &line[2..]);
    }
    out
}

/// The TOML held by a `key: |` block of a YAML file.
fn yaml_block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    assert!(lines.next().is_some(), "no `{key}: |` block");
    lines
        .take_while(|l| l.trim().is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect()
}

#[test]
fn every_config_example_in_the_repo_parses_and_so_do_their_commented_variants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap();
    let example = read("config.example.toml");
    let systemd = read("systemd/config.toml");
    let docker = read("examples/docker/config.toml");
    let k8s = read("examples/kubernetes/configmap.yaml");
    let token_line = |text: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with("access_token_file = "))
            .unwrap()
            .to_owned();
        text.replace(&line, "")
    };
    let cases: Vec<(&str, String)> = vec![
        ("config.example.toml", example.clone()),
        (
            "config.example.toml with [platform.auth]",
            uncomment(
                &example.replace(
                    "endpoint = \"embedded\"",
                    "endpoint = \"https://platform.adobe.io\"",
                ),
                &[
                    "[platform.auth]",
                    "ims_url = ",
                    "client_id = ",
                    "scopes = ",
                    "client_secret_file = ",
                ],
            ),
        ),
        ("systemd/config.toml", systemd.clone()),
        (
            "systemd/config.toml with [platform.auth]",
            uncomment(
                &token_line(&systemd),
                &[
                    "[platform.auth]",
                    "client_id = ",
                    "scopes = ",
                    "client_secret_file = ",
                ],
            ),
        ),
        ("examples/docker/config.toml", docker.clone()),
        (
            "examples/docker/config.toml for the real platform",
            uncomment(
                &docker.replace("[platform]\nendpoint = \"embedded\"\n", ""),
                &[
                    "[platform]",
                    "endpoint = ",
                    "org_id = ",
                    "sandbox = ",
                    "api_key = ",
                    "access_token_file = ",
                ],
            ),
        ),
        (
            "configmap.yaml sidecar.toml",
            yaml_block(&k8s, "sidecar.toml"),
        ),
        ("configmap.yaml job.toml", yaml_block(&k8s, "job.toml")),
    ];
    for (name, text) in &cases {
        let config = Config::parse(text, Path::new("/etc/batchdrop/config.toml"))
            .unwrap_or_else(|e| panic!("{name} does not parse: {e}\n{text}"));
        let expect_oauth = name.contains("[platform.auth]");
        let is_oauth = matches!(
            config.platform.endpoint,
            Endpoint::Url {
                credentials: Credentials::OAuth(_),
                ..
            }
        );
        assert_eq!(is_oauth, expect_oauth, "{name}: {:?}", config.platform);
        assert!(!config.watches.is_empty(), "{name}");
    }
}

#[test]
fn outcome_settings_are_per_watch_over_defaults_and_checked() {
    let p = Path::new("/etc/batchdrop.toml");
    let text = "[upload]\nmax_processing_age = \"2h\"\n[defaults]\non_batch_failure = \"isolate\"\nisolate_max_extra_batches = 4\n[[watch]]\npath='a'\ndataset='d'\n[[watch]]\npath='b'\ndataset='d'\non_batch_failure = \"fail\"\npartial_ingestion_percent = 5\n";
    let c = Config::parse(text, p).unwrap();
    let (a, b) = (c.watches[0].outcomes, c.watches[1].outcomes);
    assert_eq!(a.on_batch_failure, OnBatchFailure::Isolate);
    assert_eq!(a.isolate_max_extra_batches, 4);
    assert_eq!(a.partial_ingestion_percent, 0);
    assert_eq!(b.on_batch_failure, OnBatchFailure::Fail);
    assert_eq!(b.partial_ingestion_percent, 5);
    assert_eq!(c.upload.max_processing_age, Duration::from_secs(7200));
    assert_eq!(c.upload.give_up_after, Duration::from_secs(72 * 3600));
    let plain = Config::parse("[[watch]]\npath='a'\ndataset='d'\n", p).unwrap();
    assert_eq!(plain.watches[0].outcomes, Outcomes::default());
    let err = Config::parse(
        "[[watch]]\npath='a'\ndataset='d'\npartial_ingestion_percent = 101\n",
        p,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("partial_ingestion_percent"),
        "{err}"
    );
    let err = Config::parse(
        "[[watch]]\npath='a'\ndataset='d'\non_batch_failure = \"guess\"\n",
        p,
    )
    .unwrap_err();
    assert!(err.to_string().contains("on_batch_failure"), "{err}");
}

#[test]
fn batch_limits_go_up_to_the_platforms_hard_limits_and_no_further() {
    let p = Path::new("/etc/batchdrop.toml");
    let text = "[[watch]]\npath='a'\ndataset='d'\nmax_files=25000\nmax_bytes='1TB'\nmin_batch_bytes='200MB'\nmax_hold='2h'\n";
    let c = Config::parse(text, p).unwrap();
    let w = &c.watches[0];
    assert_eq!(
        (w.max_files, w.max_bytes),
        (PLATFORM_MAX_FILES, PLATFORM_MAX_BYTES)
    );
    assert_eq!(w.min_batch_bytes, 200_000_000);
    assert_eq!(w.max_hold, Duration::from_secs(7200));
    for (line, key, limit) in [
        ("max_bytes='1.1TB'", "max_bytes", "1000000000000"),
        ("max_file_bytes='2TB'", "max_file_bytes", "1000000000000"),
        ("max_files=0", "max_files", "25000"),
    ] {
        let err = Config::parse(&format!("[[watch]]\npath='a'\ndataset='d'\n{line}\n"), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains(limit), "{line}: {err}");
    }
    let err = Config::parse(
        "[[watch]]\npath='a'\ndataset='d'\nmax_bytes='1GB'\nmin_batch_bytes='2GB'\n",
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("min_batch_bytes") && err.contains("max_bytes"),
        "{err}"
    );
    let err = Config::parse(
        "[[watch]]\npath='a'\ndataset='d'\nmin_batch_bytes=10\nmax_wait='2h'\nmax_hold='1h'\n",
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("max_hold") && err.contains("max_wait"),
        "{err}"
    );
}

#[test]
fn seal_bytes_defaults_to_a_gib_may_be_off_and_never_undercuts_min_batch_bytes() {
    let p = Path::new("/etc/batchdrop.toml");
    let parse =
        |keys: &str| Config::parse(&format!("[[watch]]\npath='a'\ndataset='d'\n{keys}\n"), p);
    assert_eq!(parse("").unwrap().watches[0].seal_bytes, 1 << 30);
    assert_eq!(parse("seal_bytes = 0").unwrap().watches[0].seal_bytes, 0);
    let w = &parse("seal_bytes = '300MB'\nmin_batch_bytes = '300MB'")
        .unwrap()
        .watches[0];
    assert_eq!(
        (w.seal_bytes, w.min_batch_bytes),
        (300_000_000, 300_000_000)
    );
    // Off, min_batch_bytes may be anything up to max_bytes.
    assert!(parse("seal_bytes = 0\nmin_batch_bytes = '2GB'").is_ok());
    // Left at its default, it rises to a larger min_batch_bytes (a config that parsed before
    // seal_bytes existed still does).
    let w = &parse("min_batch_bytes = '2GB'").unwrap().watches[0];
    assert_eq!(w.seal_bytes, 2_000_000_000);
    let err = parse("seal_bytes = '100MB'\nmin_batch_bytes = '200MB'")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("min_batch_bytes (200000000)")
            && err.contains("seal_bytes (100000000)")
            && err.contains("seal_bytes = 0"),
        "{err}"
    );
    // Through [defaults] too.
    let text = "[defaults]\nseal_bytes = '64MiB'\n[[watch]]\npath='a'\ndataset='d'\n";
    assert_eq!(
        Config::parse(text, p).unwrap().watches[0].seal_bytes,
        64 << 20
    );
}

#[test]
fn a_mapping_resolves_against_the_config_and_output_format_needs_one() {
    let p = Path::new("/etc/batchdrop/batchdrop.toml");
    let text = "[[watch]]\npath='a'\ndataset='d'\nmapping='crm.mapping.json'\n[[watch]]\npath='b'\ndataset='d'\nmapping='/srv/m.json'\noutput_format='json'\n[[watch]]\npath='c'\ndataset='d'\n";
    let c = Config::parse(text, p).unwrap();
    assert_eq!(
        c.watches[0].mapping,
        Some(WatchMapping {
            path: PathBuf::from("/etc/batchdrop/crm.mapping.json"),
            output: crate::config::MappedFormat::Parquet,
        })
    );
    assert_eq!(
        c.watches[1].mapping.as_ref().map(|m| m.output.format()),
        Some(Format::Json)
    );
    assert_eq!(c.watches[2].mapping, None);
    let err = Config::parse(
        "[[watch]]\npath='a'\ndataset='d'\noutput_format='json'\n",
        p,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("output_format applies only"),
        "{err}"
    );
    let err = Config::parse(
        "[[watch]]\npath='a'\ndataset='d'\nmapping='m.json'\noutput_format='csv'\n",
        p,
    )
    .unwrap_err();
    assert!(err.to_string().contains("output_format"), "{err}");
    let err = Config::parse(
        "[defaults]\nmapping='m.json'\n[[watch]]\npath='a'\ndataset='d'\n",
        p,
    )
    .unwrap_err();
    assert!(err.to_string().contains("mapping"), "per watch only: {err}");
}

#[test]
fn a_watch_may_name_its_own_sandbox_and_the_others_use_the_platforms() {
    let p = Path::new("/etc/batchdrop.toml");
    let text = "[platform]\nsandbox = 'stage'\n[[watch]]\npath='a'\ndataset='d1'\nsandbox='dev'\n[[watch]]\npath='b'\ndataset='d2'\n";
    let c = Config::parse(text, p).unwrap();
    assert_eq!(c.watches[0].sandbox, "dev");
    assert_eq!(c.watches[1].sandbox, "stage");
    assert_eq!(c.sandbox_of("d1"), "dev");
    assert_eq!(c.sandbox_of("d2"), "stage");
    assert_eq!(
        c.sandbox_of("pushed-only"),
        "stage",
        "no watch: [platform]'s"
    );
}

#[test]
fn a_sandbox_that_is_no_sandbox_name_or_splits_a_dataset_is_refused_naming_the_watch() {
    let p = Path::new("/etc/batchdrop.toml");
    let err = Config::parse(
        "[[watch]]\npath='a'\ndataset='d'\nsandbox='my sandbox'\n",
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("[[watch]] a") && err.contains("my sandbox"),
        "{err}"
    );
    let text =
        "[[watch]]\npath='a'\ndataset='d'\nsandbox='dev'\n[[watch]]\npath='b'\ndataset='d'\n";
    let err = Config::parse(text, p).unwrap_err().to_string();
    assert!(
        err.contains("dataset d") && err.contains("dev") && err.contains("prod"),
        "{err}"
    );
    let text = "[[watch]]\npath='a'\ndataset='d'\nsandbox='dev'\n[[watch]]\npath='b'\ndataset='d'\nsandbox='dev'\n";
    assert!(
        Config::parse(text, p).is_ok(),
        "two folders into one dataset, one sandbox"
    );
}
