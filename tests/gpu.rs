//! GPU scheduling with an injected inventory (there is no GPU here), and the
//! device request a GPU container carries.

use crate::common::*;
use std::collections::BTreeMap;
use std::process::Command;

#[test]
fn four_one_gpu_jobs_share_two_gpus_two_at_a_time() {
    let w = Work::new();
    let mut body = String::from(
        "[batch]\ndownloads = \"./downloads\"\ngpu_mode = \"env\"\n[defaults]\nimage = \"tb-base:bookworm\"\ngpus = 1\n\
         command = [\"sh\", \"-c\", \"echo $NVIDIA_VISIBLE_DEVICES; sleep 2\"]\n",
    );
    for j in ["g1", "g2", "g3", "g4"] {
        body.push_str(&format!("[[job]]\nname = \"{j}\"\n"));
    }
    let f = w.batch("gpu.toml", &body);
    let out = w
        .tb()
        .args(["batch", f.to_str().unwrap()])
        .env("TB_GPUS", "0,1")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(
        text(&out.stderr).contains("concurrency 2"),
        "auto concurrency should be one job per GPU"
    );

    let mut jobs: BTreeMap<&str, ((f64, f64), String)> = BTreeMap::new();
    for j in ["g1", "g2", "g3", "g4"] {
        let device = w.stdout_of(j).trim().to_string();
        let state = w.state(j);
        assert_eq!(
            state["gpus"],
            serde_json::json!([device.clone()]),
            "state.json records the GPU it gave"
        );
        assert!(
            device == "0" || device == "1",
            "{j} saw NVIDIA_VISIBLE_DEVICES={device:?}"
        );
        jobs.insert(j, (interval(&state), device));
    }
    let intervals: Vec<(f64, f64)> = jobs.values().map(|v| v.0).collect();
    assert_eq!(max_overlap(&intervals), 2, "two GPUs, two jobs at a time: {jobs:?}");
    for (a, (ia, da)) in &jobs {
        for (b, (ib, db)) in &jobs {
            if a < b && ia.0 < ib.1 && ib.0 < ia.1 {
                assert_ne!(da, db, "{a} and {b} ran at the same time on GPU {da}");
            }
        }
    }
}

#[test]
fn a_device_request_names_exactly_the_assigned_gpu() {
    let w = Work::new();
    let job_dir = w.path().join("job");
    std::fs::create_dir_all(&job_dir).unwrap();
    let spec = tb::settings::JobSpec {
        name: "gpu".into(),
        image: BASE.into(),
        command: Some(vec!["nvidia-smi".into()]),
        gpus: 1,
        cpus: Some(1.5),
        memory: Some(256 << 20),
        shm_size: 1 << 30,
        time_limit: None,
        env: Default::default(),
        pass_env: vec![],
        mounts: vec![],
        code: None,
        network: "none".into(),
        train: None,
        args: Default::default(),
        metrics: Default::default(),
        prune: None,
        swept: Default::default(),
        warm_start: None,
    };
    let batch_id = format!("test-devreq-{}", std::process::id());
    let launch = tb::executor::Launch {
        job: tb::run::JobFile {
            version: 1,
            batch: "t".into(),
            batch_id: batch_id.clone(),
            attempt: 1,
            spec,
            swept: Default::default(),
        },
        job_dir: job_dir.clone(),
        downloads: w.path().to_path_buf(),
        gpus: vec!["1".into()],
        gpu_mode: tb::batch::GpuMode::DeviceRequest,
        batch_dir: w.path().to_path_buf(),
        stop_grace: std::time::Duration::from_secs(1),
        engine_wait: std::time::Duration::from_secs(5),
        away_since: None,
    };
    // The container is made by hand, with no supervisor: keep `tb clean` off it.
    let _guard = unsupervised();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = rt.block_on(tb::docker::Engine::connect()).unwrap();
    let prepared = rt.block_on(tb::executor::prepare(&engine, &launch)).unwrap();
    let id = prepared.container_id.clone();
    let inspect = Command::new("docker")
        .args(["inspect", "-f", "{{json .HostConfig.DeviceRequests}}|{{json .Config.Env}}|{{.HostConfig.Init}}|{{json .HostConfig.SecurityOpt}}|{{.HostConfig.ShmSize}}|{{.HostConfig.Memory}}|{{.HostConfig.NanoCpus}}|{{json .Config.Labels}}", &id])
        .output()
        .unwrap();
    rt.block_on(tb::executor::discard(&engine, prepared));
    let text = text(&inspect.stdout);
    let parts: Vec<&str> = text.trim().split('|').collect();
    let requests: serde_json::Value = serde_json::from_str(parts[0]).unwrap();
    assert_eq!(requests.as_array().unwrap().len(), 1, "{requests}");
    assert_eq!(requests[0]["DeviceIDs"], serde_json::json!(["1"]));
    assert_eq!(requests[0]["Capabilities"], serde_json::json!([["gpu"]]));
    assert_eq!(requests[0]["Driver"], "nvidia");
    let env: Vec<String> = serde_json::from_str(parts[1]).unwrap();
    assert!(
        !env.iter().any(|e| e.starts_with("NVIDIA_VISIBLE_DEVICES")),
        "device-request mode sets no env: {env:?}"
    );
    for want in [
        "TB_JOB=gpu",
        "TB_ATTEMPT=1",
        "TB_OUT=/out",
        "TB_DOWNLOADS=/downloads",
        &format!("TB_BATCH={batch_id}"),
    ] {
        assert!(env.iter().any(|e| e == want), "{want} missing from {env:?}");
    }
    assert_eq!(parts[2], "true", "init");
    assert_eq!(parts[3], "[\"no-new-privileges\"]");
    assert_eq!(parts[4], (1u64 << 30).to_string());
    assert_eq!(parts[5], (256u64 << 20).to_string());
    assert_eq!(parts[6], "1500000000");
    let labels: serde_json::Value = serde_json::from_str(parts[7]).unwrap();
    assert_eq!(labels["tb.batch"], batch_id.as_str());
    assert_eq!(labels["tb.job"], "gpu");
    assert_eq!(labels["tb.attempt"], "1");
    assert!(containers_labelled(&format!("tb.batch={batch_id}")).is_empty());
}

/// Whether this host's engine can run GPU containers: the NVIDIA Container
/// Toolkit registered its runtime, or its hook is installed.
fn has_nvidia_toolkit() -> bool {
    let runtimes = std::process::Command::new("docker")
        .args(["info", "--format", "{{json .Runtimes}}"])
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default();
    runtimes.contains("nvidia")
        || ["nvidia-container-runtime-hook", "nvidia-container-cli"]
            .iter()
            .any(|tool| {
                std::env::var_os("PATH")
                    .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
            })
}

#[test]
fn a_gpu_job_on_a_host_without_the_toolkit_fails_with_a_reason() {
    if has_nvidia_toolkit() {
        // With the toolkit (and maybe a GPU), the engine's answer is another:
        // what this test pins down is the message for hosts without it.
        eprintln!("skipped: this host has the NVIDIA Container Toolkit");
        return;
    }
    let w = Work::new();
    let f = w.batch(
        "x.toml",
        "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\ngpus = 1\n[[job]]\nname = \"g\"\ncommand = [\"true\"]\n[[job]]\nname = \"cpu\"\ngpus = 0\ncommand = [\"true\"]\n",
    );
    let out = w
        .tb()
        .args(["batch", f.to_str().unwrap()])
        .env("TB_GPUS", "0")
        .output()
        .unwrap();
    assert_exit(&out, 1);
    let g = w.state("g");
    assert_eq!(g["status"], "failed");
    let error = g["error"].as_str().unwrap();
    assert!(error.contains("the container did not start"), "{error}");
    assert!(error.contains("NVIDIA Container Toolkit"), "{error}");
    assert_eq!(w.state("cpu")["status"], "succeeded");
    assert!(w.leftover_containers().is_empty());
}
