//! `cargo xtask cuda-setup`: the CUDA toolkit a `--features cuda` build
//! needs, from NVIDIA's PyPI wheels into a project-local virtual environment,
//! matched to the driver's CUDA version, and a file of the environment the
//! build and the binaries need.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

#[derive(clap::Args)]
pub struct CudaSetup {
    /// CUDA version as MAJOR.MINOR (default: the driver's, from `nvidia-smi`)
    #[arg(long)]
    cuda: Option<String>,
    /// GPU compute capability as in `nvidia-smi --query-gpu=compute_cap`, e.g. 9.0 (default: the GPU's)
    #[arg(long)]
    compute_cap: Option<String>,
    /// Where the virtual environment goes
    #[arg(long, default_value = ".venv-cuda")]
    venv: PathBuf,
    /// The Python that makes the virtual environment
    #[arg(long, default_value = "python3")]
    python: String,
}

/// `MAJOR.MINOR` from `nvidia-smi`'s banner (`CUDA Version: 13.0`).
fn parse_driver_cuda(banner: &str) -> Option<(u32, u32)> {
    let rest = banner.split("CUDA Version:").nth(1)?.trim_start();
    let version: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    parse_version(&version)
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The wheels, pinned to the driver's CUDA version: PTX from a newer nvcc
/// does not load on an older driver, and an unpinned nvvm makes PTX the
/// pinned ptxas rejects.
fn wheels((major, minor): (u32, u32)) -> Result<Vec<String>> {
    ensure!(
        major == 13,
        "CUDA {major}.{minor}: only CUDA 13 wheels (one `nvidia/cu13` tree) are wired up here; docs/gpu.md has the manual recipe"
    );
    let pinned = [
        "nvidia-cuda-nvcc",
        "nvidia-nvvm",
        "nvidia-cuda-crt",
        "nvidia-cuda-runtime",
        "nvidia-cuda-cccl",
        "nvidia-cublas",
        "nvidia-cuda-nvrtc",
    ]
    .iter()
    .map(|name| format!("{name}=={major}.{minor}.*"));
    Ok(pinned
        .chain(["nvidia-curand".to_string(), format!("nvidia-cudnn-cu{major}")])
        .collect())
}

/// Function names a preprocessed `cuda.h` declares (`CUresult cuXxx(`), for
/// a link stub where no driver is installed.
fn driver_functions(preprocessed: &str) -> Vec<String> {
    // The identifier right before each `(`.
    let segments: Vec<&str> = preprocessed.split('(').collect();
    let mut names: Vec<String> = segments[..segments.len().saturating_sub(1)]
        .iter()
        .filter_map(|before| {
            let name = before.trim_end();
            let start = name
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            let name = &name[start..];
            (name.starts_with("cu") && name[2..].starts_with(|c: char| c.is_ascii_uppercase()))
                .then(|| name.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The environment a build and its binaries need, as a shell script to
/// source. A driver stub joins the link path only: at run time the real
/// driver must be found.
fn env_script(
    cuda: &Path,
    libraries: &[PathBuf],
    stub: Option<&Path>,
    compute_cap: u32,
    (major, minor): (u32, u32),
) -> String {
    let join = |paths: Vec<&Path>| {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    };
    let run_time = join(libraries.iter().map(PathBuf::as_path).collect());
    let link_time = join(libraries.iter().map(PathBuf::as_path).chain(stub).collect());
    format!(
        "# made by `cargo xtask cuda-setup`; source it, then: cargo build --release --features cuda\n\
         export PATH=\"{bin}:$PATH\"\n\
         export CUDA_ROOT=\"{root}\"\n\
         export CUDA_COMPUTE_CAP={compute_cap}\n\
         export CUDARC_CUDA_VERSION={major}0{minor}0\n\
         export LIBRARY_PATH=\"{link_time}${{LIBRARY_PATH:+:$LIBRARY_PATH}}\"\n\
         export LD_LIBRARY_PATH=\"{run_time}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\"\n",
        bin = cuda.join("bin").display(),
        root = cuda.display(),
    )
}

fn run(command: &mut Command) -> Result<String> {
    let output = command.output().with_context(|| format!("cannot run {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

fn nvidia_smi(args: &[&str]) -> Option<String> {
    Command::new("nvidia-smi")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
}

/// `libX.so.N` → `libX.so` beside it, where that is missing.
fn unversioned_links(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if let Some((stem, _)) = name.split_once(".so.") {
            let link = dir.join(format!("{stem}.so"));
            if !link.exists() {
                std::os::unix::fs::symlink(&name, &link).with_context(|| format!("cannot link {}", link.display()))?;
            }
        }
    }
    Ok(())
}

fn site_packages(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path().join("site-packages")))
        .find(|p| p.is_dir())
        .with_context(|| format!("no site-packages under {}", lib.display()))
}

fn driver_installed() -> bool {
    [
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/usr/lib64/libcuda.so.1",
        "/usr/lib/libcuda.so.1",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
}

pub fn cuda_setup(args: CudaSetup) -> Result<()> {
    let version = match &args.cuda {
        Some(text) => parse_version(text).with_context(|| format!("--cuda {text}: give MAJOR.MINOR, e.g. 13.0"))?,
        None => nvidia_smi(&[])
            .as_deref()
            .and_then(parse_driver_cuda)
            .context("no NVIDIA driver answered `nvidia-smi`: say which CUDA the GPU machine's driver runs with --cuda, e.g. --cuda 13.0")?,
    };
    let compute_cap = match &args.compute_cap {
        Some(text) => text.clone(),
        None => nvidia_smi(&["--query-gpu=compute_cap", "--format=csv,noheader"])
            .and_then(|o| o.lines().next().map(str::to_string))
            .context("no GPU to ask for its compute capability: give --compute-cap, e.g. 9.0 for an H100/H200")?,
    };
    let compute_cap: u32 = compute_cap
        .trim()
        .replace('.', "")
        .parse()
        .with_context(|| format!("compute capability `{compute_cap}` is not like 9.0"))?;
    let wheels = wheels(version)?;
    let venv = std::path::absolute(&args.venv)?;
    if !venv.join("bin/pip").exists() {
        println!("making {}", venv.display());
        run(Command::new(&args.python).args(["-m", "venv"]).arg(&venv))?;
    }
    println!("installing {}", wheels.join(" "));
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet"])
        .args(&wheels))?;
    let nvidia = site_packages(&venv)?.join("nvidia");
    let cuda = nvidia.join(format!("cu{}", version.0));
    let nvcc = cuda.join("bin/nvcc");
    ensure!(nvcc.exists(), "the wheels put no nvcc at {}", nvcc.display());
    let cudnn_lib = nvidia.join("cudnn/lib");
    let libraries = vec![cuda.join("lib"), cudnn_lib];
    for dir in &libraries {
        unversioned_links(dir)?;
    }
    let mut stub = None;
    if !driver_installed() {
        let stub_dir = venv.join("cuda-stub");
        std::fs::create_dir_all(&stub_dir)?;
        let preprocessed = run(Command::new("gcc")
            .args(["-E", "-P", "-x", "c"])
            .arg(format!("-I{}", cuda.join("include").display()))
            .arg(cuda.join("include/cuda.h")))?;
        let functions = driver_functions(&preprocessed);
        ensure!(
            functions.len() > 100,
            "found only {} driver functions in cuda.h",
            functions.len()
        );
        let source: String = functions.iter().map(|f| format!("void {f}(void) {{}}\n")).collect();
        std::fs::write(stub_dir.join("stub.c"), source)?;
        run(Command::new("gcc")
            .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
            .arg(stub_dir.join("libcuda.so"))
            .arg(stub_dir.join("stub.c")))?;
        println!(
            "no NVIDIA driver here: linking against a stub libcuda ({} functions); the real one loads on the GPU machine",
            functions.len()
        );
        stub = Some(stub_dir);
    }
    let script = venv.join("cuda-env.sh");
    std::fs::write(
        &script,
        env_script(&cuda, &libraries, stub.as_deref(), compute_cap, version),
    )?;
    let nvcc_version = run(Command::new(&nvcc).arg("--version"))?;
    println!("nvcc: {}", nvcc_version.lines().last().unwrap_or_default());
    println!(
        "environment: {}\nbuild with:\n  . {} && cargo build --release --features cuda",
        script.display(),
        script.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_pins_and_stub_names() {
        let banner = "| NVIDIA-SMI 580.95.05   Driver Version: 580.95.05   CUDA Version: 13.0     |";
        assert_eq!(parse_driver_cuda(banner), Some((13, 0)));
        assert_eq!(parse_driver_cuda("no driver"), None);
        let pins = wheels((13, 0)).expect("13.0");
        assert!(pins.contains(&"nvidia-cuda-nvcc==13.0.*".to_string()), "{pins:?}");
        assert!(pins.contains(&"nvidia-nvvm==13.0.*".to_string()), "{pins:?}");
        assert!(pins.contains(&"nvidia-cudnn-cu13".to_string()), "{pins:?}");
        assert!(wheels((12, 4)).is_err());
        let header = "CUresult cuInit(unsigned int Flags);\nCUresult cuCtxCreate_v2(CUcontext *pctx);\nint cudaFoo(int); CUresult cuInit(unsigned);";
        assert_eq!(driver_functions(header), ["cuCtxCreate_v2", "cuInit"]);
        let script = env_script(
            Path::new("/v/cu13"),
            &[PathBuf::from("/v/cu13/lib")],
            Some(Path::new("/v/stub")),
            90,
            (13, 0),
        );
        assert!(script.contains("export CUDA_COMPUTE_CAP=90"), "{script}");
        assert!(script.contains("export CUDARC_CUDA_VERSION=13000"), "{script}");
        assert!(
            script.contains("export LIBRARY_PATH=\"/v/cu13/lib:/v/stub$"),
            "{script}"
        );
        assert!(
            script.contains("export LD_LIBRARY_PATH=\"/v/cu13/lib$"),
            "the stub must not shadow the driver at run time: {script}"
        );
        assert!(script.contains("PATH=\"/v/cu13/bin:$PATH\""), "{script}");
    }
}
