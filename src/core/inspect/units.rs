//! Units: everything an inspector visits. Every display is one (its kind from its class,
//! its company from its `company` or `operator` column), and `devices/units/*.csv` adds
//! vehicles, stops and stations without a display, or names the unit a display is mounted
//! on (its `display` column): a bus with a board is inspected as the bus.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::core::catalog::{Content, Listing, Problem};
use crate::core::model::{Device, Id};

/// What kind of thing a unit is; plans are stratified by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Bus,
    Taxi,
    Stop,
    Station,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Bus, Kind::Taxi, Kind::Stop, Kind::Station];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bus => "bus",
            Kind::Taxi => "taxi",
            Kind::Stop => "stop",
            Kind::Station => "station",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
    /// The kind of the unit a display of `class` is, for the contract's classes.
    pub fn of_class(class: &str) -> Option<Kind> {
        match class {
            "bus_led" => Some(Kind::Bus),
            "taxi_top" => Some(Kind::Taxi),
            "stop_screen" => Some(Kind::Stop),
            "brt_screen" => Some(Kind::Station),
            _ => None,
        }
    }
}

/// One thing an inspector can visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unit {
    pub id: String,
    pub kind: Kind,
    pub company: String,
    /// The display mounted on it, if any.
    pub display: Option<String>,
    /// Every other column, empty cells left out.
    pub attrs: BTreeMap<String, String>,
}

impl Unit {
    /// The value of `key` for selectors: `kind`, `company`, `display`, or an attribute.
    pub fn get(&self, key: &str) -> Option<&str> {
        match key {
            "id" => Some(&self.id),
            "kind" => Some(self.kind.as_str()),
            "company" => Some(&self.company),
            "display" => self.display.as_deref(),
            _ => self.attrs.get(key).map(String::as_str),
        }
    }
}

/// The units, in file order (displays not named by a row after them), with lookups.
#[derive(Debug, Clone, Default)]
pub struct Units {
    pub list: Vec<Unit>,
    by_id: HashMap<String, usize>,
    by_display: HashMap<String, usize>,
}

impl Units {
    pub fn new(list: Vec<Unit>) -> Self {
        let by_id = list
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id.clone(), i))
            .collect();
        let by_display = list
            .iter()
            .enumerate()
            .filter_map(|(i, u)| Some((u.display.clone()?, i)))
            .collect();
        Units {
            list,
            by_id,
            by_display,
        }
    }
    pub fn get(&self, id: &str) -> Option<&Unit> {
        self.by_id.get(id).map(|&i| &self.list[i])
    }
    pub fn of_display(&self, display: &str) -> Option<&Unit> {
        self.by_display.get(display).map(|&i| &self.list[i])
    }
    pub fn count(&self, kind: Kind) -> usize {
        self.list.iter().filter(|u| u.kind == kind).count()
    }
}

/// The columns a unit list must have.
const REQUIRED: [&str; 3] = ["id", "kind", "company"];

/// Parses the unit lists (`files`, `None`: no `devices/units/` folder) against the
/// displays; every problem names its file and line. Displays that no row names become
/// units of their own when their class (or `kind` column) and `company`/`operator` say
/// what they are.
pub fn parse_units(
    files: Option<&Listing>,
    folder: &str,
    displays: &[Device],
) -> (Units, Vec<Problem>) {
    let mut problems = Vec::new();
    let known: HashMap<&str, &Device> = displays.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut listed = Listed::default();
    match files {
        None => {}
        Some(Err(e)) => problems.push(Problem::error(
            folder,
            None,
            None,
            format!("cannot list the folder: {e}"),
        )),
        Some(Ok(files)) => {
            for f in files {
                let text = match &f.content {
                    Content::Text(t) => t,
                    Content::NotFound => continue,
                    other => {
                        problems.push(Problem::error(
                            &f.name,
                            None,
                            None,
                            format!("cannot be read: {other:?}"),
                        ));
                        continue;
                    }
                };
                let ctx = Ctx {
                    file: &f.name,
                    known: &known,
                };
                for (line, unit) in ctx.rows(text, &mut problems) {
                    listed.add(unit, &f.name, line, &mut problems);
                }
            }
        }
    }
    let Listed {
        mut out,
        ids,
        mounted,
    } = listed;
    for d in displays {
        if mounted.contains_key(d.id.as_str()) {
            continue;
        }
        if ids.contains_key(d.id.as_str()) {
            problems.push(Problem::error(
                folder,
                None,
                Some("id"),
                format!(
                    "unit {:?} has the id of a display that it does not name in its display column",
                    d.id.as_str()
                ),
            ));
            continue;
        }
        match display_unit(d) {
            Ok(u) => out.push(u),
            Err(why) => problems.push(Problem::warning(
                folder,
                None,
                None,
                format!(
                    "display {:?} is no inspection unit: {why}; give it a row in {folder}",
                    d.id.as_str()
                ),
            )),
        }
    }
    (Units::new(out), problems)
}

/// The units of the lists so far, with where each id and each display was first listed.
#[derive(Default)]
struct Listed {
    out: Vec<Unit>,
    ids: HashMap<String, (String, usize)>,
    mounted: HashMap<String, (String, usize)>,
}

impl Listed {
    /// Adds `unit` (from `file`, `line`) unless its id or display was listed already.
    fn add(&mut self, unit: Unit, file: &str, line: usize, problems: &mut Vec<Problem>) {
        if let Some((first_file, first)) = self.ids.get(&unit.id) {
            problems.push(Problem::error(
                file,
                Some(line),
                Some("id"),
                format!(
                    "unit {:?} is listed twice (first in {first_file} line {first})",
                    unit.id
                ),
            ));
            return;
        }
        if let Some(d) = &unit.display {
            if let Some((first_file, first)) = self.mounted.get(d) {
                problems.push(Problem::error(
                    file,
                    Some(line),
                    Some("display"),
                    format!("display {d:?} is on two units (first in {first_file} line {first})"),
                ));
                return;
            }
            self.mounted.insert(d.clone(), (file.to_owned(), line));
        }
        self.ids.insert(unit.id.clone(), (file.to_owned(), line));
        self.out.push(unit);
    }
}

/// The unit a display is when no row names it.
fn display_unit(d: &Device) -> Result<Unit, String> {
    let kind = match d.attrs.get("kind") {
        Some(k) => Kind::parse(k)
            .ok_or_else(|| format!("its kind {k:?} is none of bus, taxi, stop, station"))?,
        None => Kind::of_class(&d.class)
            .ok_or_else(|| format!("its class {:?} says no kind", &*d.class))?,
    };
    let company = d
        .attrs
        .get("company")
        .or_else(|| d.attrs.get("operator"))
        .ok_or("it has no company or operator column")?;
    let attrs = d
        .attrs
        .iter()
        .filter(|(k, _)| !matches!(*k, "kind" | "company"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok(Unit {
        id: d.id.as_str().to_owned(),
        kind,
        company: company.to_owned(),
        display: Some(d.id.as_str().to_owned()),
        attrs,
    })
}

struct Ctx<'a> {
    file: &'a str,
    known: &'a HashMap<&'a str, &'a Device>,
}

impl Ctx<'_> {
    /// The well-formed rows of one file with their lines; the others become problems.
    fn rows(&self, text: &str, problems: &mut Vec<Problem>) -> Vec<(usize, Unit)> {
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_reader(text.as_bytes());
        let header: Vec<String> = match rdr.headers() {
            Ok(h) => h.iter().map(str::to_owned).collect(),
            Err(e) => {
                problems.push(Problem::error(
                    self.file,
                    Some(1),
                    None,
                    format!("unreadable header: {e}"),
                ));
                return Vec::new();
            }
        };
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|c| !header.iter().any(|h| h == c))
            .collect();
        if !missing.is_empty() {
            problems.push(Problem::error(
                self.file,
                Some(1),
                None,
                format!("the header needs the columns {}", missing.join(", ")),
            ));
            return Vec::new();
        }
        let mut out = Vec::new();
        for rec in rdr.records() {
            match rec {
                Ok(r) => {
                    let line = r.position().map_or(0, |p| p.line() as usize);
                    if r.len() != header.len() {
                        problems.push(Problem::error(
                            self.file,
                            Some(line),
                            None,
                            format!("{} cells where the header has {}", r.len(), header.len()),
                        ));
                        continue;
                    }
                    let cells: BTreeMap<&str, &str> =
                        header.iter().map(String::as_str).zip(r.iter()).collect();
                    if let Some(u) = self.unit(&cells, line, problems) {
                        out.push((line, u));
                    }
                }
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line() as usize);
                    problems.push(Problem::error(
                        self.file,
                        Some(line),
                        None,
                        format!("unreadable row: {e}"),
                    ));
                }
            }
        }
        out
    }

    fn unit(
        &self,
        cells: &BTreeMap<&str, &str>,
        line: usize,
        problems: &mut Vec<Problem>,
    ) -> Option<Unit> {
        let before = problems.len();
        let cell = |k: &str| cells.get(k).copied().unwrap_or("");
        let id = cell("id");
        if let Err(e) = Id::parse(id) {
            problems.push(Problem::error(
                self.file,
                Some(line),
                Some("id"),
                e.to_string(),
            ));
        }
        let kind = Kind::parse(cell("kind"));
        if kind.is_none() {
            problems.push(Problem::error(
                self.file,
                Some(line),
                Some("kind"),
                format!(
                    "unknown kind {:?}: use bus, taxi, stop or station",
                    cell("kind")
                ),
            ));
        }
        let company = cell("company");
        if company.is_empty() {
            problems.push(Problem::error(
                self.file,
                Some(line),
                Some("company"),
                "every unit needs its operating company",
            ));
        }
        let display = Some(cell("display")).filter(|d| !d.is_empty());
        if let Some(d) = display {
            if !self.known.contains_key(d) {
                problems.push(Problem::error(
                    self.file,
                    Some(line),
                    Some("display"),
                    format!("unknown display {d:?}: no display list in devices/ has it"),
                ));
            }
        }
        if problems.len() > before {
            return None;
        }
        let attrs = cells
            .iter()
            .filter(|(k, v)| !v.is_empty() && !matches!(**k, "id" | "kind" | "company" | "display"))
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Some(Unit {
            id: id.to_owned(),
            kind: kind?,
            company: company.to_owned(),
            display: display.map(str::to_owned),
            attrs,
        })
    }
}
