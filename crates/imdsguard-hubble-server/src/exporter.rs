//! The flow exporter (Cilium's `--hubble-export-file-*`): one JSON line per flow, in the format
//! `hubble observe -o jsonpb` prints, appended to a file that rotates by size, with allow and deny
//! filters. Fluent Bit and similar shippers tail it.

use imdsguard_flow::filter::{FilterError, FlowFilters};
use imdsguard_flow::flow::FlowFilter;
use imdsguard_flow::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export filter: {0}")]
    Filter(#[from] FilterError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding a flow: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`file.1` newest … `file.N` oldest).
    pub max_backups: usize,
    pub allow: Vec<FlowFilter>,
    pub deny: Vec<FlowFilter>,
}

pub struct FlowExporter {
    opts: ExportOptions,
    filters: FlowFilters,
    out: BufWriter<File>,
    size: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

impl FlowExporter {
    pub fn new(opts: ExportOptions) -> Result<FlowExporter, ExportError> {
        let filters = FlowFilters::new(&opts.allow, &opts.deny)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&opts.path)
            .map_err(io_err(&opts.path))?;
        let size = file.metadata().map_err(io_err(&opts.path))?.len();
        Ok(FlowExporter {
            opts,
            filters,
            out: BufWriter::new(file),
            size,
        })
    }

    /// Writes a flow if the filters let it through. Lines are buffered; see [`FlowExporter::flush`].
    pub fn export(&mut self, resp: &GetFlowsResponse) -> Result<(), ExportError> {
        if let Some(ResponseTypes::Flow(f)) = &resp.response_types
            && !self.filters.matches(f)
        {
            return Ok(());
        }
        let mut line = imdsguard_flow::printer::json(resp)?;
        line.push('\n');
        if self.size > 0 && self.size + line.len() as u64 > self.opts.max_bytes {
            self.rotate()?;
        }
        self.out
            .write_all(line.as_bytes())
            .map_err(io_err(&self.opts.path))?;
        self.size += line.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), ExportError> {
        self.out.flush().map_err(io_err(&self.opts.path))
    }

    fn backup(&self, n: usize) -> PathBuf {
        let mut p = self.opts.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> Result<(), ExportError> {
        self.flush()?;
        let path = self.opts.path.clone();
        if self.opts.max_backups == 0 {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        } else {
            let oldest = self.backup(self.opts.max_backups);
            if oldest.exists() {
                std::fs::remove_file(&oldest).map_err(io_err(&oldest))?;
            }
            for n in (1..self.opts.max_backups).rev() {
                let from = self.backup(n);
                if from.exists() {
                    let to = self.backup(n + 1);
                    std::fs::rename(&from, &to).map_err(io_err(&from))?;
                }
            }
            let first = self.backup(1);
            std::fs::rename(&path, &first).map_err(io_err(&path))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.out = BufWriter::new(file);
        self.size = 0;
        Ok(())
    }
}

impl Drop for FlowExporter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imdsguard_flow::flow::{Flow, Verdict};

    fn resp(verdict: Verdict, n: u32) -> GetFlowsResponse {
        GetFlowsResponse {
            node_name: "n".into(),
            time: None,
            response_types: Some(ResponseTypes::Flow(Flow {
                verdict: verdict as i32,
                policy_match_type: n,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn rotates_and_filters() {
        let dir = std::env::temp_dir().join(format!("imdsguard-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flows.json");
        let deny = vec![FlowFilter {
            verdict: vec![Verdict::Forwarded as i32],
            ..Default::default()
        }];
        let mut e = FlowExporter::new(ExportOptions {
            path: path.clone(),
            max_bytes: 200,
            max_backups: 2,
            allow: vec![],
            deny,
        })
        .unwrap();
        for i in 0..20 {
            e.export(&resp(Verdict::Dropped, i)).unwrap();
            e.export(&resp(Verdict::Forwarded, i)).unwrap();
        }
        e.flush().unwrap();
        drop(e);
        let current = std::fs::read_to_string(&path).unwrap();
        let b1 = std::fs::read_to_string(dir.join("flows.json.1")).unwrap();
        assert!(dir.join("flows.json.2").exists());
        assert!(!dir.join("flows.json.3").exists());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(current.len() <= 200 && b1.len() <= 200, "{current}\n{b1}");
        assert!(!current.contains("FORWARDED") && current.contains("DROPPED"));
        // Every line is a complete GetFlowsResponse.
        for line in current.lines().chain(b1.lines()) {
            let back: GetFlowsResponse = serde_json::from_str(line).unwrap();
            assert!(matches!(back.response_types, Some(ResponseTypes::Flow(_))));
        }
        // The newest flows are in the current file.
        assert!(
            current
                .lines()
                .last()
                .unwrap()
                .contains("\"policy_match_type\":19"),
            "{current}"
        );
    }

    #[test]
    fn processes_are_written_as_the_hubble_cli_reads_them() {
        use imdsguard_flow::jsonline::LineDecoder;
        use imdsguard_hubble_proto::process::{self, ProcessInfo};
        let dir = std::env::temp_dir().join(format!("imdsguard-export-p-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flows.json");
        let mut e = FlowExporter::new(ExportOptions {
            path: path.clone(),
            max_bytes: 1 << 20,
            max_backups: 1,
            allow: vec![],
            deny: vec![],
        })
        .unwrap();
        let mut r = resp(Verdict::Dropped, 1);
        let Some(ResponseTypes::Flow(f)) = &mut r.response_types else {
            unreachable!()
        };
        let p = ProcessInfo {
            container: "istio-proxy".into(),
            process: "envoy".into(),
            pid: 4242,
            uid: None,
        };
        process::set(f, &p);
        e.export(&r).unwrap();
        e.flush().unwrap();
        drop(e);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            text.contains(r#""extensions":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"container":"istio-proxy","pid":4242,"process":"envoy"}}"#),
            "{text}"
        );
        let mut d = LineDecoder::new();
        assert_eq!(d.decode(text.trim_end()).unwrap(), &r);
    }
}
