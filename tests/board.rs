//! `tb board`: TensorBoard over a batch's jobs, from the trainer image.

use crate::common::*;
use std::io::Read;
use std::process::Stdio;

const TRAINER: &str = "tb-trainer:latest";

/// Three jobs, each writing a TensorBoard scalar the way PyTorch does.
fn batch(w: &Work) -> std::path::PathBuf {
    let script = "from torch.utils.tensorboard import SummaryWriter\n\
                  w = SummaryWriter('/out/tensorboard')\n\
                  for e in range(3):\n    w.add_scalar('val_loss', 1.0 / (e + 1), e)\n\
                  w.close()\n";
    let command = serde_json::to_string(&["python", "-c", script]).unwrap();
    w.batch(
        "board.toml",
        &format!(
            "[batch]\nname = \"board\"\ndownloads = \"./downloads\"\nconcurrency = 3\n\
             [defaults]\nimage = \"{TRAINER}\"\ngpus = 0\ncommand = {command}\n\
             [[job]]\nname = \"small\"\n[[job]]\nname = \"medium\"\n[[job]]\nname = \"large\"\n"
        ),
    )
}

/// `tb board` on a free port, once it printed its URL.
fn start_board(w: &Work) -> (Running, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut board = Running(
        w.tb()
            .args(["board", "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // What a user does: read the URL tb prints, then open it.
    let stdout = board.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    let url = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("a URL within 120 s");
    assert_eq!(url.trim(), format!("http://127.0.0.1:{port}/"), "the URL on stdout");
    (board, url.trim().to_string())
}

fn get(url: &str) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "5", url])
        .output()
        .ok()?;
    out.status.success().then(|| text(&out.stdout))
}

#[test]
fn board_serves_every_job_and_ctrl_c_leaves_no_container() {
    let w = Work::new();
    let f = batch(&w);
    assert_exit(&w.run(&["batch", f.to_str().unwrap()]), 0);
    let batch_id = w.batch_dir().file_name().unwrap().to_string_lossy().into_owned();
    let (mut board, url) = start_board(&w);
    let runs_url = format!("{url}data/runs");
    let mut runs = String::new();
    wait_until(60, "TensorBoard to list the jobs", || {
        runs = get(&runs_url).unwrap_or_default();
        ["small", "medium", "large"]
            .iter()
            .all(|j| runs.contains(&format!("\"{j}")))
    });
    let listed: Vec<String> = serde_json::from_str(&runs).unwrap();
    for job in ["small", "medium", "large"] {
        assert!(
            listed.iter().any(|r| r == job || r.starts_with(&format!("{job}/"))),
            "{job}: {listed:?}"
        );
    }
    let label = format!("tb.board={batch_id}");
    assert_eq!(
        containers_labelled(&label).len(),
        1,
        "one TensorBoard container while it serves"
    );
    // SAFETY: our own child.
    unsafe { libc::kill(board.0.id() as i32, libc::SIGINT) };
    let status = board.0.wait().unwrap();
    let mut err = String::new();
    board.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("3 of 3 job(s)"), "{err}");
    assert!(containers_labelled(&label).is_empty(), "no container left after Ctrl-C");
    assert!(get(&runs_url).is_none(), "TensorBoard stopped");

    // A `tb board` killed outright cannot clean up; the next one does.
    let (mut killed, _) = start_board(&w);
    // SAFETY: our own child.
    unsafe { libc::kill(killed.0.id() as i32, libc::SIGKILL) };
    killed.0.wait().unwrap();
    assert_eq!(containers_labelled(&label).len(), 1, "left behind by SIGKILL");
    let (mut next, _) = start_board(&w);
    assert_eq!(
        containers_labelled(&label).len(),
        1,
        "the orphan removed, the new one serving"
    );
    // SAFETY: our own child.
    unsafe { libc::kill(next.0.id() as i32, libc::SIGHUP) };
    assert_eq!(
        next.0.wait().unwrap().code(),
        Some(0),
        "a hang-up stops it as Ctrl-C does"
    );
    assert!(
        containers_labelled(&label).is_empty(),
        "no container left after a hang-up"
    );
}

#[test]
fn board_over_a_batch_without_event_files_says_why() {
    let w = Work::new();
    let f = w.batch(
        "plain.toml",
        "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\n\
         [[job]]\nname = \"echo\"\ncommand = [\"echo\", \"hi\"]\n",
    );
    assert_exit(&w.run(&["batch", f.to_str().unwrap()]), 0);
    let out = w.run(&["board"]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("no job of batch") && err.contains("TensorBoardLogger"),
        "{err}"
    );
}
