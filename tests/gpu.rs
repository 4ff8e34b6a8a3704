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
    let out = w.batch_on_gpus(&f, "0,1");
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

/// What one job's container saw: its GPU, its share, and when it ran by
/// its own clock.
#[derive(Debug, Clone, PartialEq)]
struct Saw {
    device: String,
    share: String,
    start: f64,
    end: f64,
}

/// A `[[job]]` whose container prints what [`Saw`] reads, sleeping `secs`.
fn recording_job(name: &str, gpus: &str, secs: u32) -> String {
    format!(
        "[[job]]\nname = \"{name}\"\ngpus = {gpus}\n\
         command = [\"sh\", \"-c\", 'echo \"dev=$NVIDIA_VISIBLE_DEVICES share=${{TB_GPU_SHARE:-none}} start=$(date +%s.%N)\"; sleep {secs}; echo \"end=$(date +%s.%N)\"']\n"
    )
}

const GPU_ENV_HEAD: &str =
    "[batch]\ndownloads = \"./downloads\"\ngpu_mode = \"env\"\n[defaults]\nimage = \"tb-base:bookworm\"\n";

/// Runs [`GPU_ENV_HEAD`] with `jobs` to the end on the GPUs `TB_GPUS`
/// names; it must succeed. Its stderr.
fn run_on_gpus(w: &Work, gpus: &str, jobs: &str) -> String {
    let f = w.batch("gpus.toml", &format!("{GPU_ENV_HEAD}{jobs}"));
    text(&w.batch_on_gpus(&f, gpus).stderr)
}

fn saw(w: &Work, job: &str) -> Saw {
    let out = w.stdout_of(job);
    let field = |key: &str| {
        out.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{job} printed no {key}: {out:?}"))
            .to_string()
    };
    Saw {
        device: field("dev"),
        share: field("share"),
        start: field("start").parse().unwrap(),
        end: field("end").parse().unwrap(),
    }
}

fn overlap(a: &Saw, b: &Saw) -> bool {
    a.start < b.end && b.start < a.end
}

#[test]
fn six_half_gpu_jobs_run_four_at_a_time_two_to_a_gpu() {
    let w = Work::new();
    let jobs = ["h1", "h2", "h3", "h4", "h5", "h6"];
    let body: String = jobs.iter().map(|j| recording_job(j, "0.5", 4)).collect();
    let stderr = run_on_gpus(&w, "0,1", &body);
    assert!(
        stderr.contains("concurrency 4"),
        "auto concurrency counts shares: {stderr}"
    );

    let mut ran = BTreeMap::new();
    for j in jobs {
        let s = saw(&w, j);
        let state = w.state(j);
        assert!(
            s.device == "0" || s.device == "1",
            "{j} saw NVIDIA_VISIBLE_DEVICES={:?}",
            s.device
        );
        assert_eq!(s.share, "0.5", "{j}: TB_GPU_SHARE");
        assert_eq!(state["gpus"], serde_json::json!([s.device.clone()]), "{j}: one GPU id");
        assert_eq!(state["gpu_share"], 0.5, "{j}: state.json records the share");
        ran.insert(j, s);
    }
    let intervals: Vec<(f64, f64)> = ran.values().map(|s| (s.start, s.end)).collect();
    assert_eq!(
        max_overlap(&intervals),
        4,
        "two GPUs of halves, four jobs at a time: {ran:?}"
    );
    for device in ["0", "1"] {
        let on: Vec<(f64, f64)> = ran
            .values()
            .filter(|s| s.device == device)
            .map(|s| (s.start, s.end))
            .collect();
        assert!(
            max_overlap(&on) <= 2,
            "GPU {device} carried more than two halves: {ran:?}"
        );
    }

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.batch_dir().join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["common"]["gpus"], 0.5,
        "the report's configuration shows the share"
    );
    let job = &report["jobs"][0];
    assert_eq!(
        (&job["gpus"], &job["gpu_share"]),
        (&serde_json::json!(1), &serde_json::json!(0.5))
    );
    let seconds: f64 = ran.values().map(|s| s.end - s.start).sum();
    let gpu_hours = report["headline"]["gpu_hours"].as_f64().unwrap();
    assert!(
        gpu_hours < 0.75 * seconds / 3600.0,
        "GPU-hours count half a GPU per job: {gpu_hours} for {seconds} s of jobs"
    );
}

#[test]
fn a_whole_gpu_job_waits_for_a_gpu_with_no_share_in_use() {
    let w = Work::new();
    let mut body: String = ["h1", "h2", "h3"].iter().map(|j| recording_job(j, "0.5", 4)).collect();
    body.push_str(&recording_job("whole", "1", 2));
    for j in ["h4", "h5", "h6"] {
        body.push_str(&recording_job(j, "0.5", 2));
    }
    run_on_gpus(&w, "0,1", &body);
    let whole = saw(&w, "whole");
    assert_eq!(whole.share, "none");
    assert_eq!(w.state("whole")["gpus"], serde_json::json!([whole.device.clone()]));
    assert!(w.state("whole").get("gpu_share").is_none());
    let first = ["h1", "h2", "h3"].map(|j| saw(&w, j));
    assert!(
        first.iter().all(|h| overlap(h, &first[0])),
        "the first three halves ran together: {first:?}"
    );
    for j in ["h1", "h2", "h3", "h4", "h5", "h6"] {
        let h = saw(&w, j);
        assert!(
            h.device != whole.device || !overlap(&h, &whole),
            "{j} ran on GPU {} beside the whole-GPU job: {h:?} {whole:?}",
            h.device
        );
    }
    // The three halves filled one GPU and half the other: the whole job
    // could only start once a GPU drained.
    assert!(
        whole.start >= first.iter().map(|h| h.end).fold(f64::MAX, f64::min),
        "it started before any half ended: {whole:?} {first:?}"
    );
}

#[test]
fn shares_survive_a_supervisor_restart() {
    let _guard = unsupervised();
    let w = Work::new();
    // One GPU, room for three jobs: only the GPU can hold c back.
    let mut body = GPU_ENV_HEAD.replace("[defaults]", "concurrency = 3\n[defaults]");
    body.push_str(&recording_job("a", "0.5", 8));
    body.push_str(&recording_job("b", "0.5", 8));
    body.push_str(&recording_job("c", "0.5", 1));
    let f = w.batch("night.toml", &body);
    let mut tb = Running(
        w.tb()
            .args(["batch", f.to_str().unwrap()])
            .env("TB_GPUS", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(60, "a and b to start", || printed(&w, "a", 1) && printed(&w, "b", 1));
    // SAFETY: our own child.
    unsafe { libc::kill(tb.0.id() as i32, libc::SIGKILL) };
    tb.0.wait().unwrap();
    assert_eq!(w.state("c")["status"], "pending", "c waited for the GPU");

    let out = w.tb().arg("resume").env("TB_GPUS", "0").output().unwrap();
    assert_exit(&out, 0);
    let (a, b, c) = (saw(&w, "a"), saw(&w, "b"), saw(&w, "c"));
    assert_eq!(w.state("a")["attempt"], 1, "a was followed again, not restarted");
    assert_eq!(w.state("a")["gpu_share"], 0.5);
    assert!(
        !(overlap(&c, &a) && overlap(&c, &b)),
        "after the restart c joined a and b on the one GPU: {a:?} {b:?} {c:?}"
    );
    assert!(w.leftover_containers().is_empty());
}

#[test]
fn a_share_that_is_not_one_over_n_is_refused() {
    let w = Work::new();
    for bad in ["0.3", "1.5"] {
        let mut body = GPU_ENV_HEAD.to_string();
        body.push_str(&recording_job("a", bad, 1));
        let f = w.batch("bad.toml", &body);
        let out = w
            .tb()
            .args(["validate", f.to_str().unwrap()])
            .env("TB_GPUS", "0,1")
            .output()
            .unwrap();
        assert_exit(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "invalid gpus {bad}: expected 0.5, 0.33, 0.25, 0.2, 0.17, 0.14, 0.12 or a whole number"
            )),
            "{err}"
        );
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
        gpus: tb::gpu::GpuShare::Whole(1),
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
