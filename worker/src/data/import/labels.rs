//! Class labels for `import-frames` (a labelled dataset for activity recognition).
//!
//! Labels name each video folder by its directory name (the clips cut from a video share its
//! label) and come from
//! - a CSV `clip,label` (header optional; fields may be double-quoted, `""` inside quotes is a
//!   quote, so a class name with commas is written `"a, b"`), or
//! - Something-Something V2's split files (`something-something-v2-train.json`,
//!   `-validation.json`: arrays of `{"id", "label", "template", "placeholders"}`); the class is
//!   the template without its brackets (`Holding [something] next to [something]` →
//!   `Holding something next to something`); entries without a template (the test split) are
//!   unlabelled.
//!
//! The class list (label k = `classes[k]`) is, in order of precedence: `--classes FILE` (one
//! class per line), `--label-names FILE` (SSv2's `something-something-v2-labels.json`, template
//! → index as a string; classes in index order), or every class the label files name, sorted.
//! `--groups FILE` (CSV `class,group`) maps classes to activity groups.
//!
//! Every problem of an input file is a data error naming the file, the line or entry, and the
//! fix.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use clap::Args;

use super::frames::FrameFolders;
use crate::{Error, Result};

/// The label flags of `import-frames`.
#[derive(Debug, Clone, Default, Args)]
pub struct LabelArgs {
    /// Label the clips from FILE (repeatable): a CSV `clip,label` (clip = the video folder's
    /// name) or, for `.json`, a Something-Something V2 split file
    /// (something-something-v2-train.json, -validation.json). Writes a labelled dataset.
    #[arg(long = "labels", value_name = "FILE")]
    pub labels: Vec<PathBuf>,
    /// Class list and order from SSv2's something-something-v2-labels.json (template → index).
    #[arg(
        long,
        value_name = "FILE",
        requires = "labels",
        conflicts_with = "classes"
    )]
    pub label_names: Option<PathBuf>,
    /// Class list and order: one class name per line (label k = line k, blank lines ignored).
    #[arg(long, value_name = "FILE", requires = "labels")]
    pub classes: Option<PathBuf>,
    /// Class → activity group map: a CSV `class,group` (header optional; unlisted classes are
    /// their own group).
    #[arg(long, value_name = "FILE", requires = "labels")]
    pub groups: Option<PathBuf>,
    /// Leave out videos without a label (default: an error naming the video).
    #[arg(long, requires = "labels")]
    pub skip_unlabelled: bool,
    /// Leave out videos whose class is not in --classes / --label-names (e.g. SSv2's 41-class
    /// subset; default: an error naming the file and line).
    #[arg(long, requires = "labels")]
    pub skip_other_classes: bool,
}

/// Where a label came from: a file and a line or entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The label file.
    pub path: PathBuf,
    /// `line N` or `entry N (id …)`.
    pub place: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.path.display(), self.place)
    }
}

/// One row of a label file: a clip and its class (`None`: listed but unlabelled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRow {
    /// The video folder's name.
    pub clip: String,
    /// The class name.
    pub class: Option<String>,
    /// Where it was read.
    pub origin: Origin,
}

fn data_err(path: &Path, msg: String) -> Error {
    Error::Data {
        path: path.to_owned(),
        msg,
    }
}

fn read_text(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| data_err(path, format!("cannot read the file: {e}")))?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(&text).to_owned())
}

/// Splits one CSV line into fields (double quotes, `""` escapes); an error message on an
/// unterminated quote or text after a closing quote.
fn csv_fields(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field has no closing quote".into()),
                }
            }
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("{c:?} after a closing quote")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_owned());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(
                            "a quote inside an unquoted field (quote the whole field)".into()
                        )
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim().to_owned());
        }
    }
}

/// Two-column CSV records `(a, b, line number)`, skipping blank lines and a first line equal to
/// `header` (case-insensitive).
fn csv_pairs(text: &str, path: &Path, header: [&str; 2]) -> Result<Vec<(String, String, usize)>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut first = true;
    for (k, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let at = |m: String| data_err(path, format!("line {}: {m}", k + 1));
        let f = csv_fields(line).map_err(at)?;
        let is_header = first
            && f.len() == 2
            && f[0].eq_ignore_ascii_case(header[0])
            && f[1].eq_ignore_ascii_case(header[1]);
        first = false;
        if is_header {
            continue;
        }
        if f.len() != 2 {
            return Err(at(format!(
                "{} fields, expected 2 ({},{}); quote a name that contains commas: \"a, b\"",
                f.len(),
                header[0],
                header[1]
            )));
        }
        for (v, name) in f.iter().zip(header) {
            if v.is_empty() {
                return Err(at(format!("empty {name}")));
            }
        }
        let mut f = f.into_iter();
        let (a, b) = (f.next().unwrap(), f.next().unwrap());
        out.push((a, b, k + 1));
    }
    Ok(out)
}

/// Parses a `clip,label` CSV read from `path`.
pub fn parse_csv_labels(text: &str, path: &Path) -> Result<Vec<LabelRow>> {
    Ok(csv_pairs(text, path, ["clip", "label"])?
        .into_iter()
        .map(|(clip, class, line)| LabelRow {
            clip,
            class: Some(class),
            origin: Origin {
                path: path.to_owned(),
                place: format!("line {line}"),
            },
        })
        .collect())
}

/// SSv2's class of a template: the brackets removed (`Holding [something]` → `Holding
/// something`).
pub fn ssv2_class(template: &str) -> String {
    template.replace(['[', ']'], "").trim().to_owned()
}

/// Parses a Something-Something V2 split file (`something-something-v2-train.json`, …).
pub fn parse_ssv2_split(text: &str, path: &Path) -> Result<Vec<LabelRow>> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        data_err(
            path,
            format!("not valid JSON ({e}); expected SSv2's [{{\"id\": …, \"template\": …}}, …]"),
        )
    })?;
    let serde_json::Value::Array(entries) = v else {
        return Err(data_err(
            path,
            "not an SSv2 split file: expected a JSON array of {\"id\", \"label\", \"template\"} \
             objects (for the template → index file use --label-names)"
                .into(),
        ));
    };
    let mut out = Vec::with_capacity(entries.len());
    for (k, e) in entries.iter().enumerate() {
        let at = |m: &str| data_err(path, format!("entry {k}: {m}"));
        let id = match e.get("id") {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => {
                return Err(at(
                    "no \"id\" (the video id, also the name of its frame folder)",
                ))
            }
        };
        let class = match e.get("template") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(t)) if !ssv2_class(t).is_empty() => Some(ssv2_class(t)),
            Some(_) => {
                return Err(at(&format!(
                    "id {id}: \"template\" is not a non-empty string"
                )))
            }
        };
        out.push(LabelRow {
            clip: id.clone(),
            class,
            origin: Origin {
                path: path.to_owned(),
                place: format!("entry {k} (id {id})"),
            },
        });
    }
    Ok(out)
}

/// Parses SSv2's `something-something-v2-labels.json` (class → index as a string) into the
/// class list in index order.
pub fn parse_ssv2_names(text: &str, path: &Path) -> Result<Vec<String>> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| data_err(path, format!("not valid JSON ({e})")))?;
    let serde_json::Value::Object(map) = v else {
        return Err(data_err(
            path,
            "expected SSv2's labels object {\"class\": \"index\", …} (a split file goes to --labels)"
                .into(),
        ));
    };
    let mut slots: Vec<Option<String>> = vec![None; map.len()];
    for (name, idx) in &map {
        let at = |m: String| data_err(path, format!("entry {name:?}: {m}"));
        let k = match idx {
            serde_json::Value::String(s) => s.trim().parse::<usize>().ok(),
            serde_json::Value::Number(n) => n.as_u64().map(|n| n as usize),
            _ => None,
        }
        .ok_or_else(|| at(format!("index {idx} is not a non-negative integer")))?;
        let class = ssv2_class(name);
        if class.is_empty() {
            return Err(at("empty class name".into()));
        }
        let slot = slots.get_mut(k).ok_or_else(|| {
            at(format!(
                "index {k} is not below the number of classes ({}); indices must be 0 … {}",
                map.len(),
                map.len().saturating_sub(1)
            ))
        })?;
        if let Some(other) = slot {
            return Err(at(format!("index {k} is also the index of {other:?}")));
        }
        *slot = Some(class);
    }
    let classes: Vec<String> = slots.into_iter().map(|s| s.expect("all filled")).collect();
    if classes.is_empty() {
        return Err(data_err(path, "no classes".into()));
    }
    Ok(classes)
}

/// Parses a class list: one class per line, blank lines ignored.
pub fn parse_class_list(text: &str, path: &Path) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = HashMap::new();
    for (k, line) in text.lines().enumerate() {
        let c = line.trim();
        if c.is_empty() {
            continue;
        }
        if let Some(first) = seen.insert(c.to_owned(), k + 1) {
            return Err(data_err(
                path,
                format!("line {}: class {c:?} is already on line {first}", k + 1),
            ));
        }
        out.push(c.to_owned());
    }
    if out.is_empty() {
        return Err(data_err(
            path,
            "no classes (one class name per line)".into(),
        ));
    }
    Ok(out)
}

/// Parses a `class,group` CSV against the class list.
pub fn parse_groups(
    text: &str,
    path: &Path,
    classes: &[String],
) -> Result<BTreeMap<String, String>> {
    let known: BTreeSet<&str> = classes.iter().map(String::as_str).collect();
    let mut out = BTreeMap::new();
    let mut lines = HashMap::new();
    for (class, group, line) in csv_pairs(text, path, ["class", "group"])? {
        if !known.contains(class.as_str()) {
            return Err(data_err(
                path,
                format!(
                    "line {line}: class {class:?} is not one of the {} classes{}; fix the name \
                     or remove the line",
                    classes.len(),
                    suggest(&class, classes)
                ),
            ));
        }
        if let Some(first) = lines.insert(class.clone(), line) {
            return Err(data_err(
                path,
                format!("line {line}: class {class:?} already has a group on line {first}"),
            ));
        }
        out.insert(class, group);
    }
    Ok(out)
}

/// ` (did you mean "…"?)` for the closest class name, when one is close.
fn suggest(name: &str, classes: &[String]) -> String {
    classes
        .iter()
        .map(|c| {
            (
                strsim::levenshtein(&name.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .min()
        .filter(|(d, c)| *d <= 3.max(c.len() / 5))
        .map(|(_, c)| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// Reads one `--labels` file: SSv2 JSON for `.json`, else a CSV.
pub fn read_label_file(path: &Path) -> Result<Vec<LabelRow>> {
    let text = read_text(path)?;
    if path
        .extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("json"))
    {
        parse_ssv2_split(&text, path)
    } else {
        parse_csv_labels(&text, path)
    }
}

/// What a video's label lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoLabel {
    /// The class index.
    Class(i64),
    /// Left out (no label with `--skip-unlabelled`, or another class with
    /// `--skip-other-classes`).
    Skip,
}

/// What the label files say about one clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Its class index.
    Class(i64),
    /// Listed without a label (SSv2's test split).
    Unlabelled,
    /// A class outside the class list, left out with `--skip-other-classes`.
    OtherClass,
}

/// The loaded labels: class list, groups, and each clip's class index.
#[derive(Debug, Clone)]
pub struct Labels {
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Class → group.
    pub groups: BTreeMap<String, String>,
    /// Clip name → what the label files say.
    clips: HashMap<String, Entry>,
    files: Vec<PathBuf>,
    skip_unlabelled: bool,
}

impl Labels {
    /// Loads the files of `args` (`None` when no `--labels` was given).
    pub fn load(args: &LabelArgs) -> Result<Option<Self>> {
        if args.labels.is_empty() {
            return Ok(None);
        }
        let mut rows = Vec::new();
        for p in &args.labels {
            rows.extend(read_label_file(p)?);
        }
        Self::from_rows(args, rows).map(Some)
    }

    fn from_rows(args: &LabelArgs, rows: Vec<LabelRow>) -> Result<Self> {
        let fixed = match (&args.classes, &args.label_names) {
            (Some(p), _) => Some((p.clone(), parse_class_list(&read_text(p)?, p)?)),
            (None, Some(p)) => Some((p.clone(), parse_ssv2_names(&read_text(p)?, p)?)),
            (None, None) => None,
        };
        if args.skip_other_classes && fixed.is_none() {
            return Err(Error::Usage(
                "--skip-other-classes needs a class list (--classes FILE or --label-names FILE)"
                    .into(),
            ));
        }
        let classes = match &fixed {
            Some((_, c)) => c.clone(),
            None => rows
                .iter()
                .filter_map(|r| r.class.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        if classes.is_empty() {
            return Err(data_err(
                &args.labels[0],
                "no labelled clip in the label file(s) (the SSv2 test split has no labels; \
                 import it without --labels)"
                    .into(),
            ));
        }
        let index: HashMap<&str, i64> = classes
            .iter()
            .enumerate()
            .map(|(k, c)| (c.as_str(), k as i64))
            .collect();
        let mut clips = HashMap::new();
        let mut seen: HashMap<String, Origin> = HashMap::new();
        for r in rows {
            if let Some(first) = seen.get(&r.clip) {
                return Err(data_err(
                    &r.origin.path,
                    format!(
                        "{}: clip {:?} is already labelled at {first}; give each clip once",
                        r.origin.place, r.clip
                    ),
                ));
            }
            let label = match &r.class {
                None => Entry::Unlabelled,
                Some(c) => match index.get(c.as_str()) {
                    Some(&k) => Entry::Class(k),
                    None if args.skip_other_classes => Entry::OtherClass,
                    None => {
                        let (list, _) = fixed.as_ref().expect("derived lists hold every class");
                        return Err(data_err(
                            &r.origin.path,
                            format!(
                                "{}: class {c:?} of clip {:?} is not in the class list {}{}; add \
                                 it there, fix the label, or pass --skip-other-classes to leave \
                                 such clips out",
                                r.origin.place,
                                r.clip,
                                list.display(),
                                suggest(c, &classes)
                            ),
                        ));
                    }
                },
            };
            clips.insert(r.clip.clone(), label);
            seen.insert(r.clip, r.origin);
        }
        let groups = match &args.groups {
            Some(p) => parse_groups(&read_text(p)?, p, &classes)?,
            None => BTreeMap::new(),
        };
        Ok(Self {
            classes,
            groups,
            clips,
            files: args.labels.clone(),
            skip_unlabelled: args.skip_unlabelled,
        })
    }

    /// The label of the video in folder `dir` (matched by its name).
    pub fn video(&self, dir: &Path) -> Result<VideoLabel> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match self.clips.get(&name) {
            Some(Entry::Class(k)) => Ok(VideoLabel::Class(*k)),
            Some(Entry::OtherClass) => Ok(VideoLabel::Skip),
            Some(Entry::Unlabelled) if self.skip_unlabelled => Ok(VideoLabel::Skip),
            None if self.skip_unlabelled => Ok(VideoLabel::Skip),
            found => {
                let files: Vec<String> =
                    self.files.iter().map(|p| p.display().to_string()).collect();
                Err(data_err(
                    dir,
                    format!(
                        "video {name:?} has no label in {} ({}); add a line `{name},CLASS`, or \
                         pass --skip-unlabelled to leave unlabelled videos out",
                        files.join(", "),
                        if found.is_some() {
                            "listed without a template/label"
                        } else {
                            "not listed"
                        }
                    ),
                ))
            }
        }
    }

    /// Labels the videos of `f`, drops the skipped ones (and their clips), and returns the
    /// class index of each remaining video. Two labelled videos with the same folder name are
    /// an error (labels are matched by name).
    pub fn apply(&self, f: &mut FrameFolders) -> Result<Vec<i64>> {
        let mut keep = Vec::with_capacity(f.videos.len());
        let mut labels = Vec::new();
        let mut names: HashMap<std::ffi::OsString, &Path> = HashMap::new();
        for (dir, _) in &f.videos {
            if let Some(n) = dir.file_name() {
                if let Some(other) = names.insert(n.to_owned(), dir) {
                    return Err(data_err(
                        dir,
                        format!(
                            "another video folder has the same name ({}); labels are matched by \
                             folder name, so rename one",
                            other.display()
                        ),
                    ));
                }
            }
            match self.video(dir)? {
                VideoLabel::Class(k) => {
                    keep.push(true);
                    labels.push(k);
                }
                VideoLabel::Skip => keep.push(false),
            }
        }
        let skipped = keep.iter().filter(|k| !**k).count();
        if skipped > 0 {
            tracing::info!(
                "{skipped} of {} videos left out (no label or another class)",
                keep.len()
            );
        }
        let mut new_index = vec![usize::MAX; keep.len()];
        let mut k = 0;
        for (v, &kept) in keep.iter().enumerate() {
            if kept {
                new_index[v] = k;
                k += 1;
            }
        }
        let mut v = 0;
        f.videos.retain(|_| {
            v += 1;
            keep[v - 1]
        });
        f.clips = f
            .clips
            .iter()
            .filter(|(v, _)| keep[*v])
            .map(|&(v, s)| (new_index[v], s))
            .collect();
        Ok(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("labels.csv")
    }

    #[test]
    fn csv_with_and_without_header_and_quotes() {
        let text = "clip,label\r\nv1, walking\n\n\"v2\",\"Putting something, so it falls\"\n";
        let rows = parse_csv_labels(text, &p()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].clip, "v1");
        assert_eq!(rows[0].class.as_deref(), Some("walking"));
        assert_eq!(rows[0].origin.place, "line 2");
        assert_eq!(
            rows[1].class.as_deref(),
            Some("Putting something, so it falls")
        );
        let rows = parse_csv_labels("\u{feff}a,x\nb,\"say \"\"hi\"\"\"\n", &p()).unwrap();
        assert_eq!(rows[0].clip, "a");
        assert_eq!(rows[1].class.as_deref(), Some("say \"hi\""));
        assert_eq!(rows[1].origin.place, "line 2");
    }

    #[test]
    fn malformed_csv_names_the_line_and_the_fix() {
        for (text, want) in [
            ("a,b\nc,d,e\n", "line 2: 3 fields, expected 2"),
            ("a,b\nc\n", "line 2: 1 fields"),
            ("a,\"b\n", "line 1: a quoted field has no closing quote"),
            ("a,\"b\"x\n", "line 1: 'x' after a closing quote"),
            ("a,b\n,d\n", "line 2: empty clip"),
        ] {
            let e = parse_csv_labels(text, &p()).unwrap_err();
            assert!(matches!(e, Error::Data { .. }));
            assert!(e.to_string().starts_with("labels.csv: "), "{e}");
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    const TRAIN: &str = r#"[
        {"id": "78687", "label": "holding potato next to vase",
         "template": "Holding [something] next to [something]", "placeholders": ["potato", "vase"]},
        {"id": "42326", "label": "spreading margarine onto bread",
         "template": "Spreading [something] onto [something]", "placeholders": ["margarine", "bread"]}
    ]"#;

    #[test]
    fn ssv2_split_and_names() {
        let rows = parse_ssv2_split(TRAIN, Path::new("train.json")).unwrap();
        assert_eq!(rows[0].clip, "78687");
        assert_eq!(
            rows[0].class.as_deref(),
            Some("Holding something next to something")
        );
        assert_eq!(rows[1].origin.place, "entry 1 (id 42326)");
        // The test split: ids only.
        let rows = parse_ssv2_split(r#"[{"id": "1420"}]"#, Path::new("test.json")).unwrap();
        assert_eq!(rows[0].class, None);
        let names = parse_ssv2_names(
            r#"{"Spreading something onto something": "1",
                "Holding something next to something": "0"}"#,
            Path::new("labels.json"),
        )
        .unwrap();
        assert_eq!(
            names,
            [
                "Holding something next to something",
                "Spreading something onto something"
            ]
        );
    }

    #[test]
    fn malformed_ssv2_files_name_the_entry() {
        let split = Path::new("train.json");
        for (text, want) in [
            ("[{\"id\": \"1\",", "not valid JSON"),
            ("{\"a\": \"0\"}", "expected a JSON array"),
            ("[{\"template\": \"x\"}]", "entry 0: no \"id\""),
            (
                "[{\"id\": \"1\", \"template\": \"a\"}, {\"id\": \"2\", \"template\": 3}]",
                "entry 1: id 2: \"template\" is not a non-empty string",
            ),
        ] {
            let e = parse_ssv2_split(text, split).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
            assert!(e.to_string().starts_with("train.json: "), "{e}");
        }
        let names = Path::new("labels.json");
        for (text, want) in [
            ("[]", "expected SSv2's labels object"),
            (
                "{\"a\": \"0\", \"b\": \"0\"}",
                "index 0 is also the index of",
            ),
            (
                "{\"a\": \"0\", \"b\": \"2\"}",
                "index 2 is not below the number of classes (2)",
            ),
            (
                "{\"a\": \"x\"}",
                "entry \"a\": index \"x\" is not a non-negative integer",
            ),
        ] {
            let e = parse_ssv2_names(text, names).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn class_lists_groups_and_lookup() {
        assert_eq!(
            parse_class_list("b\n\na\n", &p()).unwrap(),
            ["b".to_owned(), "a".to_owned()]
        );
        let e = parse_class_list("a\nb\na\n", Path::new("c.txt")).unwrap_err();
        assert!(
            e.to_string()
                .contains("line 3: class \"a\" is already on line 1"),
            "{e}"
        );
        let classes = ["up".to_owned(), "down".to_owned()];
        let g = parse_groups("class,group\nup,vertical\n", &p(), &classes).unwrap();
        assert_eq!(g, BTreeMap::from([("up".into(), "vertical".into())]));
        let e = parse_groups("upp,vertical\n", Path::new("g.csv"), &classes).unwrap_err();
        assert!(
            e.to_string().contains(
                "line 1: class \"upp\" is not one of the 2 classes (did you mean \"up\"?)"
            ),
            "{e}"
        );
        let e = parse_groups("up,a\nup,b\n", Path::new("g.csv"), &classes).unwrap_err();
        assert!(e
            .to_string()
            .contains("line 2: class \"up\" already has a group on line 1"));
    }

    fn rows(csv: &str) -> Vec<LabelRow> {
        parse_csv_labels(csv, &p()).unwrap()
    }

    #[test]
    fn labels_derive_or_check_the_class_list() {
        let args = LabelArgs {
            labels: vec![p()],
            ..LabelArgs::default()
        };
        let l = Labels::from_rows(&args, rows("v1,walk\nv2,box\nv3,walk\n")).unwrap();
        assert_eq!(l.classes, ["box", "walk"], "sorted when no list is given");
        assert_eq!(l.video(Path::new("x/v3")).unwrap(), VideoLabel::Class(1));
        let e = l.video(Path::new("x/v9")).unwrap_err();
        assert!(matches!(e, Error::Data { .. }));
        assert!(
            e.to_string()
                .contains("video \"v9\" has no label in labels.csv")
                && e.to_string().contains("--skip-unlabelled"),
            "{e}"
        );
        let e = Labels::from_rows(&args, rows("v1,walk\nv1,walk\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("line 2: clip \"v1\" is already labelled at labels.csv line 1"),
            "{e}"
        );

        // A fixed list that misses a label: an error naming the line, or a skip.
        let dir = std::env::temp_dir().join(format!("convtt-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = dir.join("classes.txt");
        std::fs::write(&list, "walk\nrun\n").unwrap();
        let mut args = LabelArgs {
            labels: vec![p()],
            classes: Some(list.clone()),
            ..LabelArgs::default()
        };
        let e = Labels::from_rows(&args, rows("v1,walk\nv2,wak\n")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "labels.csv: line 2: class \"wak\" of clip \"v2\" is not in the class list"
            ) && msg.contains("classes.txt")
                && msg.contains("did you mean \"walk\"")
                && msg.contains("--skip-other-classes"),
            "{msg}"
        );
        args.skip_other_classes = true;
        let l = Labels::from_rows(&args, rows("v1,run\nv2,wak\n")).unwrap();
        assert_eq!(l.classes, ["walk", "run"]);
        assert_eq!(l.video(Path::new("v1")).unwrap(), VideoLabel::Class(1));
        assert_eq!(l.video(Path::new("v2")).unwrap(), VideoLabel::Skip);
        // … but a video the files do not list is still an error without --skip-unlabelled.
        assert!(l.video(Path::new("v3")).is_err());
        args.skip_unlabelled = true;
        let l = Labels::from_rows(&args, rows("v1,run\nv2,wak\n")).unwrap();
        assert_eq!(l.video(Path::new("v3")).unwrap(), VideoLabel::Skip);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
