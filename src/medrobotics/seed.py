"""Sample data: a realistic, deterministic fleet sent through the ingestion service's batch API.

Generation is pure: every value comes from a `random.Random` seeded from the options, and the
time window is anchored at a fixed end date, so the same options always give the same records.
Records are plain dicts shaped exactly as the wire schemas in `medrobotics.domain` expect them.
"""

from __future__ import annotations

import gzip
import math
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from medrobotics import __version__

Record = dict[str, Any]

DEFAULT_END = datetime(2025, 10, 31, tzinfo=UTC)
DEFAULT_DAYS = 730
MAX_BATCH = 1000
ORDER: tuple[str, ...] = ("robots", "procedures", "outcomes", "maintenance", "telemetry")
"""Send order: maintenance needs its robots and outcomes their procedures."""


# --- Reference data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A robot model and the procedure categories it is cleared for."""

    name: str
    manufacturer: str
    categories: tuple[str, ...]
    weight: float
    serial_prefix: str
    firmware: tuple[str, ...]
    power_w: float
    camera: bool = True


SOFT_TISSUE = ("urological", "gynecological", "general", "thoracic")
MODELS: tuple[Model, ...] = (
    Model(
        "DaVinci Xi",
        "Intuitive Surgical",
        (*SOFT_TISSUE, "cardiac"),
        34,
        "SK",
        ("9.1.4", "9.2.1", "10.0.2"),
        1150,
    ),
    Model("DaVinci X", "Intuitive Surgical", SOFT_TISSUE, 10, "SX", ("9.1.4", "9.2.1"), 1050),
    Model(
        "DaVinci SP",
        "Intuitive Surgical",
        ("urological", "general", "thoracic"),
        6,
        "SP",
        ("3.2.0", "3.3.1"),
        980,
    ),
    Model("Versius", "CMR Surgical", SOFT_TISSUE, 9, "CMR", ("4.4.0", "4.6.2", "5.0.1"), 720),
    Model(
        "Hugo RAS",
        "Medtronic",
        ("urological", "gynecological", "general"),
        9,
        "HUG",
        ("2.1.0", "2.3.5"),
        860,
    ),
    Model(
        "Mako SmartRobotics",
        "Stryker",
        ("orthopedic",),
        17,
        "MKO",
        ("4.0.3", "4.1.0"),
        640,
        camera=False,
    ),
    Model(
        "ROSA Knee",
        "Zimmer Biomet",
        ("orthopedic",),
        8,
        "ROSA",
        ("1.5.2", "1.6.0"),
        560,
        camera=False,
    ),
    Model(
        "CORI Surgical System",
        "Smith+Nephew",
        ("orthopedic",),
        4,
        "CORI",
        ("2.2.1",),
        420,
        camera=False,
    ),
)
MODELS_BY_NAME = {m.name: m for m in MODELS}

FACILITIES: tuple[str, ...] = (
    "Riverside University Hospital",
    "St. Catherine Medical Center",
    "Lakeview Regional Medical Center",
    "Northgate General Hospital",
    "Mercy Heights Hospital",
    "Harborview Surgical Institute",
    "Cedar Valley Medical Center",
    "Westbrook Memorial Hospital",
    "Summit Orthopedic & Spine Center",
    "Bayside Cancer Institute",
    "Pine Ridge Community Hospital",
    "Eastfield Heart & Vascular Center",
    "Meadowbrook Women's Hospital",
    "Granite State Medical Center",
    "Oak Hollow Regional Hospital",
)
FIRST_NAMES: tuple[str, ...] = (
    "Elena", "James", "Priya", "Michael", "Sofia", "David", "Aisha", "Thomas", "Mei", "Daniel",
    "Laura", "Omar", "Hannah", "Carlos", "Ingrid", "Samuel", "Yuki", "Rachel", "Kwame", "Anna",
    "Victor", "Nadia", "Peter", "Grace",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "Park", "Okafor", "Schmidt", "Rossi", "Nakamura", "Patel", "Hughes", "Moreau", "Lindqvist",
    "Alvarez", "Chen", "Kowalski", "Haddad", "Brennan", "Silva", "Ivanova", "Mensah", "Fischer",
    "O'Neill", "Tanaka", "Reyes", "Novak", "Bauer", "Sato",
)  # fmt: skip


@dataclass(frozen=True)
class Kind:
    """A procedure type: typical duration, complexity, stay and blood loss."""

    name: str
    weight: float
    minutes: float
    complexity: float
    stay_days: float
    blood_ml: float
    sex: str | None = None


CATEGORY_WEIGHTS: dict[str, float] = {
    "urological": 26,
    "gynecological": 24,
    "general": 28,
    "thoracic": 8,
    "cardiac": 3,
    "orthopedic": 30,
}
KINDS: dict[str, tuple[Kind, ...]] = {
    "urological": (
        Kind("Radical Prostatectomy", 40, 175, 3.2, 1.5, 250, "male"),
        Kind("Partial Nephrectomy", 22, 165, 3.4, 2.0, 200),
        Kind("Nephrectomy", 14, 150, 2.8, 2.5, 180),
        Kind("Pyeloplasty", 8, 140, 2.5, 1.5, 50),
        Kind("Radical Cystectomy", 6, 330, 4.3, 7.0, 550),
    ),
    "gynecological": (
        Kind("Hysterectomy", 50, 125, 2.4, 1.0, 120, "female"),
        Kind("Myomectomy", 16, 150, 2.9, 1.0, 300, "female"),
        Kind("Sacrocolpopexy", 12, 170, 3.0, 1.5, 100, "female"),
        Kind("Endometriosis Excision", 14, 130, 3.1, 1.0, 80, "female"),
        Kind("Ovarian Cystectomy", 8, 90, 1.8, 0.5, 50, "female"),
    ),
    "cardiac": (
        Kind("Mitral Valve Repair", 55, 240, 4.2, 5.0, 400),
        Kind("Coronary Artery Bypass Grafting (CABG)", 30, 270, 4.4, 6.0, 550),
        Kind("Atrial Septal Defect Repair", 15, 200, 3.6, 4.0, 250),
    ),
    "thoracic": (
        Kind("Lobectomy", 50, 180, 3.4, 3.0, 150),
        Kind("Segmentectomy", 22, 160, 3.2, 2.5, 100),
        Kind("Thymectomy", 18, 130, 2.8, 2.0, 80),
        Kind("Esophagectomy", 10, 360, 4.6, 9.0, 400),
    ),
    "general": (
        Kind("Cholecystectomy", 30, 75, 1.6, 0.5, 30),
        Kind("Inguinal Hernia Repair", 24, 70, 1.5, 0.3, 20),
        Kind("Ventral Hernia Repair", 14, 110, 2.4, 1.5, 50),
        Kind("Colectomy", 14, 190, 3.3, 4.0, 150),
        Kind("Low Anterior Resection", 6, 240, 3.9, 5.0, 250),
        Kind("Roux-en-Y Gastric Bypass", 7, 150, 3.0, 1.5, 80),
        Kind("Nissen Fundoplication", 5, 110, 2.5, 1.0, 40),
    ),
    "orthopedic": (
        Kind("Total Knee Arthroplasty", 50, 95, 2.3, 1.5, 200),
        Kind("Partial Knee Arthroplasty", 20, 80, 2.0, 1.0, 120),
        Kind("Total Hip Arthroplasty", 30, 90, 2.4, 1.5, 300),
    ),
}
HIP = "Total Hip Arthroplasty"
AGE: dict[str, tuple[float, float]] = {
    "urological": (63, 9),
    "gynecological": (46, 10),
    "cardiac": (61, 11),
    "thoracic": (64, 10),
    "general": (52, 15),
    "orthopedic": (67, 9),
}
COMPLICATIONS: dict[str, tuple[str, ...]] = {
    "urological": ("minor bleeding", "urinary retention", "urinary tract infection",
                   "anastomotic leak", "ileus", "lymphocele"),
    "gynecological": ("minor bleeding", "urinary tract infection", "vaginal cuff dehiscence",
                      "infection", "ileus"),
    "cardiac": ("atrial fibrillation", "pleural effusion", "bleeding requiring transfusion",
                "pericardial effusion", "infection"),
    "thoracic": ("prolonged air leak", "pneumonia", "atrial fibrillation", "minor bleeding"),
    "general": ("minor bleeding", "wound infection", "ileus", "seroma", "anastomotic leak"),
    "orthopedic": ("deep vein thrombosis", "wound infection", "joint stiffness",
                   "periprosthetic fracture", "minor bleeding"),
}  # fmt: skip
TOOLS: dict[str, tuple[str, ...]] = {
    "soft": ("Grasper", "Needle Driver", "Cautery Hook", "Monopolar Scissors", "Bipolar Forceps",
             "Vessel Sealer", "Stapler", "Clip Applier", "Suction Irrigator"),
    "orthopedic": ("Saw Blade", "Burr", "Reamer", "Impactor", "Probe"),
}  # fmt: skip
GRIP_N: dict[str, tuple[float, float]] = {
    "Grasper": (7.5, 1.2),
    "Needle Driver": (14.0, 1.8),
    "Cautery Hook": (2.0, 0.5),
    "Monopolar Scissors": (4.5, 0.8),
    "Bipolar Forceps": (6.0, 1.0),
    "Vessel Sealer": (11.0, 1.5),
    "Stapler": (18.0, 2.5),
    "Clip Applier": (9.0, 1.2),
    "Suction Irrigator": (1.0, 0.3),
    "Saw Blade": (3.0, 0.8),
    "Burr": (2.5, 0.6),
    "Reamer": (4.0, 1.0),
    "Impactor": (6.0, 1.5),
    "Probe": (0.8, 0.2),
}
ENERGY_TOOLS = frozenset({"Cautery Hook", "Monopolar Scissors", "Bipolar Forceps", "Vessel Sealer"})
CUTTING_TOOLS = frozenset({"Saw Blade", "Burr", "Reamer", "Impactor"})
PARTS: tuple[str, ...] = (
    "Instrument drive unit", "Arm joint encoder", "Camera control unit", "Cooling fan",
    "Power supply module", "Touchscreen display", "Sterile adapter interface", "Optical tracker",
    "Foot pedal assembly", "Drive motor", "Cable harness",
)  # fmt: skip
FAULTS: tuple[tuple[str, str, str], ...] = (
    ("Arm joint encoder reporting position drift", "Replaced encoder and recalibrated arm",
     "Arm joint encoder"),
    ("Vision system lost image during procedure", "Replaced camera control unit",
     "Camera control unit"),
    ("Instrument drive motor overheating", "Replaced drive motor and cleaned vents",
     "Drive motor"),
    ("Intermittent power loss on patient cart", "Replaced power supply module",
     "Power supply module"),
    ("Collision detection false positives", "Updated sensor thresholds and recalibrated",
     "Cable harness"),
    ("Cooling fan failure, system thermal warning", "Replaced cooling fan", "Cooling fan"),
    ("Surgeon console display flicker", "Replaced touchscreen display", "Touchscreen display"),
)  # fmt: skip


# --- Helpers ----------------------------------------------------------------------------------


def rng_for(seed: int | str) -> random.Random:
    """Return the deterministic generator every seed function draws from."""
    # Sample data, not secrets: a seeded PRNG is the point (reproducible fleets).
    return random.Random(seed)  # noqa: S311


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _stop(robot: Record, end: datetime) -> datetime:
    """Return when a robot stops working: its decommissioning visit if retired, else `end`."""
    if robot["status"] == "retired" and robot.get("last_maintenance_date"):
        day = date.fromisoformat(robot["last_maintenance_date"])
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    return end


def _installed(robot: Record) -> datetime:
    day = date.fromisoformat(robot["installation_date"])
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# --- Generation -------------------------------------------------------------------------------


def fleet(
    rng: random.Random,
    *,
    robots: int = 50,
    facilities: int = 10,
    end: datetime = DEFAULT_END,
    days: int = DEFAULT_DAYS,
) -> list[Record]:
    """Generate `robots` robots of real models spread across `facilities` named facilities."""
    start = end - timedelta(days=days)
    sites = []
    for n in range(facilities):
        name = FACILITIES[n % len(FACILITIES)]
        if n >= len(FACILITIES):
            name = f"{name} Campus {n // len(FACILITIES) + 1}"
        sites.append((_uuid(rng), name))
    rng.shuffle(sites)
    serials: set[str] = set()
    out: list[Record] = []
    for n in range(robots):
        # The first two are fixed so that even a small fleet covers all six categories.
        if n == 0:
            model = MODELS_BY_NAME["DaVinci Xi"]
        elif n == 1:
            model = MODELS_BY_NAME["Mako SmartRobotics"]
        else:
            model = rng.choices(MODELS, weights=[m.weight for m in MODELS])[0]
        site_id, site_name = sites[n] if n < len(sites) else rng.choice(sites)
        serial = f"{model.serial_prefix}{rng.getrandbits(32):08X}"
        while serial in serials:
            serial = f"{model.serial_prefix}{rng.getrandbits(32):08X}"
        serials.add(serial)
        if rng.random() < 0.8:
            installed = start - timedelta(days=rng.randint(30, 1500))
        else:
            installed = start + timedelta(days=rng.randint(0, days * 3 // 4))
        roll = rng.random()
        status = "operational"
        last: date | None = None
        if roll < 0.04 and n >= 2:
            status = "retired"
            earliest = max(installed, start) + timedelta(days=180)
            span = max(1, (end - timedelta(days=30) - earliest).days)
            last = (earliest + timedelta(days=rng.randint(0, span))).date()
        elif roll < 0.10:
            status = "maintenance"
        firmware = model.firmware[-1] if status != "retired" else model.firmware[0]
        out.append(
            {
                "robot_id": _uuid(rng),
                "robot_serial_number": serial,
                "robot_model": model.name,
                "manufacturer": model.manufacturer,
                "installation_date": installed.date().isoformat(),
                "facility_id": site_id,
                "facility_name": site_name,
                "status": status,
                "last_maintenance_date": last.isoformat() if last else None,
                "firmware_version": firmware,
            }
        )
    return out


@dataclass(frozen=True)
class _Surgeon:
    surgeon_id: str
    name: str
    categories: frozenset[str]


def _surgeons(rng: random.Random, robots: Sequence[Record]) -> dict[str, list[_Surgeon]]:
    served: dict[str, set[str]] = defaultdict(set)
    for robot in robots:
        served[robot["facility_id"]].update(MODELS_BY_NAME[robot["robot_model"]].categories)
    staff: dict[str, list[_Surgeon]] = {}
    for facility in sorted(served):
        people = []
        for category in sorted(served[facility]):
            for _ in range(rng.randint(1, 3)):
                name = f"Dr. {_person(rng)}"
                people.append(_Surgeon(_uuid(rng), name, frozenset({category})))
        staff[facility] = people
    return staff


def _kind(rng: random.Random, category: str) -> Kind:
    kinds = KINDS[category]
    return rng.choices(kinds, weights=[k.weight for k in kinds])[0]


def _complexity(rng: random.Random, kind: Kind) -> float:
    return round(_clamp(rng.gauss(kind.complexity, 0.7), 1.0, 5.0), 1)


def _minutes(rng: random.Random, kind: Kind, complexity: float) -> float:
    # Harder cases take longer; log-normal spread around the type's typical time.
    return kind.minutes * (0.7 + 0.15 * complexity) * math.exp(rng.gauss(0, 0.18))


def procedures(
    rng: random.Random,
    robots: Sequence[Record],
    *,
    count: int = 5000,
    end: datetime = DEFAULT_END,
    days: int = DEFAULT_DAYS,
) -> list[Record]:
    """Generate `count` procedures over the `days` before `end`, sorted by start time."""
    start = end - timedelta(days=days)
    staff = _surgeons(rng, robots)
    windows: list[tuple[Record, datetime, datetime]] = []
    for robot in robots:
        first, last = max(start, _installed(robot)), _stop(robot, end)
        if last - first >= timedelta(days=1):
            windows.append((robot, first, last))
    if not windows or count <= 0:
        return []
    # Busier and quieter robots; volume also scales with how long a robot was in service.
    weights = [(b - a).days * rng.uniform(0.6, 1.4) for _, a, b in windows]
    live = [w for w in windows if w[2] >= end]
    running = min(count, max(1, count // 500), len(live))
    busy: dict[tuple[str, date], float] = {}
    out: list[Record] = []

    def record(robot: Record, category: str, kind: Kind, complexity: float) -> Record:
        people = [s for s in staff[robot["facility_id"]] if category in s.categories]
        surgeon = rng.choice(people)
        mean, sd = AGE[category]
        sex = kind.sex or rng.choice(("male", "female"))
        return {
            "procedure_id": _uuid(rng),
            "robot_id": robot["robot_id"],
            "procedure_type": kind.name,
            "procedure_category": category,
            "surgeon_id": surgeon.surgeon_id,
            "surgeon_name": surgeon.name,
            "patient_id": _uuid(rng),
            "patient_age": int(_clamp(round(rng.gauss(mean, sd)), 18, 90)),
            "patient_gender": sex,
            "complexity_score": complexity,
        }

    def pick(robot: Record) -> tuple[str, Kind, float, float]:
        cats = MODELS_BY_NAME[robot["robot_model"]].categories
        category = rng.choices(cats, weights=[CATEGORY_WEIGHTS[c] for c in cats])[0]
        kind = _kind(rng, category)
        complexity = _complexity(rng, kind)
        return category, kind, complexity, _minutes(rng, kind, complexity)

    for robot, _first, _last in rng.sample(live, running):
        # Late emergencies still under way at the reference time.
        category, kind, complexity, minutes = pick(robot)
        since = end - timedelta(minutes=rng.uniform(10, max(15.0, minutes - 5)))
        rec = record(robot, category, kind, complexity)
        rec.update(start_time=_iso(since), end_time=None, duration_minutes=None)
        rec["status"] = "in_progress"
        out.append(rec)

    for _ in range(count - running):
        robot, first, last = rng.choices(windows, weights=weights)[0]
        category, kind, complexity, minutes = pick(robot)
        span = (last - first).days
        began: datetime | None = None
        for _try in range(30):
            day = (first + timedelta(days=rng.randrange(span))).date()
            if day.weekday() >= 5 and rng.random() > 0.15:
                continue  # elective surgery is mostly on weekdays
            # Cases follow each other on a robot's day list, 07:30 to about 20:30.
            at = busy.get((robot["robot_id"], day), 450 + rng.uniform(0, 45))
            if at + minutes > 20.5 * 60:
                continue
            busy[(robot["robot_id"], day)] = at + minutes + rng.uniform(25, 60)
            began = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=at)
            break
        if began is None:
            # The fleet is overbooked for this size: accept an overlap rather than loop forever.
            began = first + timedelta(seconds=rng.uniform(0, (last - first).total_seconds()))
        rec = record(robot, category, kind, complexity)
        roll = rng.random()
        if roll < 0.025:
            status, finished = "cancelled", None
        elif roll < 0.04:
            # Aborted: stopped part-way (conversion to open surgery, equipment fault).
            status, finished = (
                "aborted",
                began + timedelta(minutes=minutes * rng.uniform(0.15, 0.6)),
            )
        else:
            status, finished = "completed", began + timedelta(minutes=minutes)
        if finished is not None and finished > end:
            status, finished = "in_progress", None
        if began >= end:
            began = end - timedelta(minutes=15)
        rec.update(
            start_time=_iso(began),
            end_time=_iso(finished) if finished else None,
            duration_minutes=round((finished - began).total_seconds() / 60, 1)
            if finished
            else None,
            status=status,
        )
        out.append(rec)
    out.sort(key=lambda r: (r["start_time"], r["procedure_id"]))
    return out


def complication_probability(complexity: float, age: int) -> float:
    """Return the chance a procedure ends complicated or failed: rises with complexity and age."""
    return min(0.9, 0.03 + 0.035 * (complexity - 1) ** 1.3 + 0.002 * max(0, age - 60))


def outcomes(rng: random.Random, procedures: Iterable[Record]) -> list[Record]:
    """Generate one outcome per completed procedure."""
    out: list[Record] = []
    for proc in procedures:
        if proc["status"] != "completed":
            continue
        category = proc["procedure_category"]
        kind = next(k for k in KINDS[category] if k.name == proc["procedure_type"])
        c = float(proc["complexity_score"])
        p = complication_probability(c, int(proc["patient_age"]))
        roll = rng.random()
        if roll < p * (0.04 + 0.02 * c):
            status = "failed"
        elif roll < p:
            status = "complicated"
        else:
            status = "successful"
        complications: list[str] = []
        if status != "successful":
            complications = rng.sample(COMPLICATIONS[category], k=rng.choice((1, 1, 1, 2, 3)))
        blood = kind.blood_ml * (0.6 + 0.2 * c) * math.exp(rng.gauss(0, 0.35))
        stay = kind.stay_days * math.exp(rng.gauss(0, 0.3))
        if status == "complicated":
            blood *= rng.uniform(1.3, 2.5)
            stay += rng.uniform(1.5, 6)
        elif status == "failed":
            blood *= rng.uniform(2, 4)
            stay += rng.uniform(4, 14)
        readmit = {"successful": 0.03, "complicated": 0.2, "failed": 0.35}[status]
        satisfaction = {"successful": (8.8, 0.8), "complicated": (6.4, 1.4), "failed": (4.0, 1.6)}
        recovery = {"successful": (88 - 3 * c, 6), "complicated": (64, 11), "failed": (40, 14)}
        notes = {
            "successful": f"{kind.name} completed without incident.",
            "complicated": f"{kind.name} completed; post-operative {', '.join(complications)}.",
            "failed": f"{kind.name} did not achieve its goal; {', '.join(complications)}.",
        }[status]
        out.append(
            {
                "procedure_id": proc["procedure_id"],
                "success_status": status,
                "blood_loss_ml": round(blood, 0),
                "complications": complications,
                "hospital_stay_days": round(stay, 1),
                "readmission_30day": rng.random() < readmit,
                "patient_satisfaction_score": round(
                    _clamp(rng.gauss(*satisfaction[status]), 1, 10), 1
                ),
                "surgeon_notes": notes,
                "recovery_score": round(_clamp(rng.gauss(*recovery[status]), 1, 100), 1),
                "follow_up_required": status != "successful" or rng.random() < 0.15,
            }
        )
    return out


def maintenance(
    rng: random.Random,
    robots: Sequence[Record],
    *,
    end: datetime = DEFAULT_END,
) -> list[Record]:
    """Generate each robot's service history: quarterly visits plus some emergencies."""
    techs = [(_uuid(rng), _person(rng)) for _ in range(12)]
    out: list[Record] = []

    def visit(robot: Record, day: date, kind: str, *, last: bool = False) -> None:
        tech_id, tech_name = rng.choice(techs)
        issues: str | None = None
        parts: list[str] = []
        if kind == "routine":
            hours, cost = rng.uniform(3, 8), rng.uniform(2500, 6000)
            actions = "Preventive maintenance: inspection, cleaning, cable and arm checks"
            if rng.random() < 0.25:
                issues = "Minor wear on instrument drive interface"
                parts = ["Sterile adapter interface"]
                cost += rng.uniform(400, 1500)
        elif kind == "calibration":
            hours, cost = rng.uniform(1, 4), rng.uniform(1200, 3000)
            actions = "Arm kinematics and vision system calibration"
        elif kind == "upgrade":
            hours, cost = rng.uniform(4, 12), rng.uniform(4000, 15000)
            actions = "Firmware upgrade and post-upgrade verification"
        else:
            issues, actions, part = rng.choice(FAULTS)
            parts = [part, *rng.sample(PARTS, k=rng.choice((0, 0, 1)))]
            parts = list(dict.fromkeys(parts))
            hours, cost = rng.uniform(12, 96), rng.uniform(8000, 45000)
        if last:
            issues = "End-of-life inspection"
            actions = "System decommissioned; arms and instruments removed"
        nxt = None if last else (day + timedelta(days=rng.randint(85, 95))).isoformat()
        out.append(
            {
                "maintenance_id": _uuid(rng),
                "robot_id": robot["robot_id"],
                "maintenance_date": day.isoformat(),
                "maintenance_type": kind,
                "technician_id": tech_id,
                "technician_name": tech_name,
                "issues_found": issues,
                "actions_taken": actions,
                "parts_replaced": parts,
                "downtime_hours": round(hours, 1),
                "next_maintenance_date": nxt,
                "cost": round(cost, 2),
            }
        )

    for robot in robots:
        stop = _stop(robot, end).date()
        day = _installed(robot).date() + timedelta(days=rng.randint(60, 100))
        n = 0
        while day < stop:
            n += 1
            kind = "upgrade" if n % 4 == 0 else ("calibration" if n % 4 == 2 else "routine")
            visit(robot, day, kind)
            gap = rng.randint(80, 100)
            if rng.random() < 0.12:
                urgent = day + timedelta(days=rng.randint(5, gap - 5))
                if urgent < stop:
                    visit(robot, urgent, "emergency")
            day += timedelta(days=gap)
        if robot["status"] == "retired":
            visit(robot, stop, "routine", last=True)
        elif robot["status"] == "maintenance":
            visit(robot, (end - timedelta(days=rng.randint(1, 3))).date(), "emergency")
    return out


def telemetry(
    rng: random.Random,
    procedures: Iterable[Record],
    robots: Sequence[Record],
    *,
    per_procedure: int = 20,
    end: datetime = DEFAULT_END,
) -> Iterator[Record]:
    """Yield `per_procedure` samples across each procedure that ran, with smooth trajectories."""
    models = {r["robot_id"]: MODELS_BY_NAME[r["robot_model"]] for r in robots}
    for proc in procedures:
        if proc["status"] == "cancelled" or per_procedure <= 0:
            continue
        yield from _samples(rng, proc, models[proc["robot_id"]], per_procedure, end)


def _wave(rng: random.Random, amplitude: float) -> Callable[[float], float]:
    # A sum of a few slow sines: smooth, bounded, different for every procedure.
    parts = [
        (amplitude / (j + 1), rng.uniform(0.5, 2.5) * (j + 1), rng.uniform(0, 2 * math.pi))
        for j in range(3)
    ]
    return lambda u: sum(a * math.sin(2 * math.pi * f * u + p) for a, f, p in parts)


def _samples(
    rng: random.Random, proc: Record, model: Model, n: int, end: datetime
) -> Iterator[Record]:
    began = _parse(proc["start_time"])
    finished = _parse(proc["end_time"]) if proc["end_time"] else end
    total_ms = int((finished - began).total_seconds() * 1000)
    ortho = proc["procedure_category"] == "orthopedic"
    tools = TOOLS["orthopedic" if ortho else "soft"]
    changes = sorted(rng.random() for _ in range(rng.randint(1, 4)))
    sequence = [rng.choice(tools)]
    for _ in changes:
        sequence.append(rng.choice([t for t in tools if t != sequence[-1]]))
    centre = (rng.uniform(-40, 40), rng.uniform(-40, 40), rng.uniform(120, 220))
    x, y, z = _wave(rng, 60), _wave(rng, 60), _wave(rng, 35)
    rot, zoom, angle = _wave(rng, 70), _wave(rng, 1.0), _wave(rng, 20)
    warm, rise = rng.uniform(33.5, 36.5), rng.uniform(4, 9)
    step = total_ms / n
    previous = -1
    for i in range(n):
        offset = int((i + 0.5 + rng.uniform(-0.3, 0.3)) * step)
        offset = min(max(offset, previous + 1), total_ms)
        previous = offset
        u = offset / total_ms if total_ms else 0.0
        tool = sequence[sum(1 for c in changes if c <= u)]
        mean, sd = GRIP_N[tool]
        cutting = tool in CUTTING_TOOLS
        minutes = offset / 60_000
        power = model.power_w * (0.9 + 0.05 * math.sin(2 * math.pi * 3 * u)) + rng.gauss(0, 12)
        if tool in ENERGY_TOOLS:
            power += rng.uniform(60, 180)
        if cutting:
            power += rng.uniform(120, 260)
        yield {
            "procedure_id": proc["procedure_id"],
            "robot_id": proc["robot_id"],
            "timestamp": _iso(began + timedelta(milliseconds=offset)),
            "arm_position_x": round(centre[0] + x(u) + rng.gauss(0, 0.3), 2),
            "arm_position_y": round(centre[1] + y(u) + rng.gauss(0, 0.3), 2),
            "arm_position_z": round(centre[2] + z(u) + rng.gauss(0, 0.3), 2),
            "arm_rotation": round(_clamp(rot(u) + rng.gauss(0, 0.5), -180, 180), 2),
            "tool_type": tool,
            "grip_pressure": round(max(0.0, rng.gauss(mean, sd)), 2),
            "tremor_compensation": round(_clamp(rng.gauss(95, 2), 80, 100), 1),
            "camera_zoom": round(2.2 + zoom(u), 2) if model.camera else None,
            "camera_angle": round(angle(u), 1) if model.camera else None,
            "force_feedback_x": round(rng.gauss(0, 6 if cutting else 0.8), 3),
            "force_feedback_y": round(rng.gauss(0, 6 if cutting else 0.8), 3),
            "force_feedback_z": round(
                -abs(rng.gauss(15 if cutting else 1.5, 5 if cutting else 0.6)), 3
            ),
            "system_temperature": round(
                warm + rise * (1 - math.exp(-minutes / 45)) + rng.gauss(0, 0.1), 2
            ),
            "power_consumption": round(power, 1),
        }


@dataclass
class Dataset:
    """A generated fleet: entity records in memory, telemetry produced on demand."""

    robots: list[Record]
    procedures: list[Record]
    outcomes: list[Record]
    maintenance: list[Record]
    telemetry_per_procedure: int
    end: datetime
    telemetry_seed: int

    def telemetry(self) -> Iterator[Record]:
        """Yield the telemetry samples (the same ones on every call)."""
        return telemetry(
            rng_for(self.telemetry_seed),
            self.procedures,
            self.robots,
            per_procedure=self.telemetry_per_procedure,
            end=self.end,
        )

    def records(self, entity: str) -> Iterable[Record]:
        """Return one entity's records, in send order."""
        if entity == "telemetry":
            return self.telemetry()
        return list(getattr(self, entity))

    def counts(self) -> dict[str, int]:
        """Return how many records of each entity this dataset holds."""
        ran = sum(1 for p in self.procedures if p["status"] != "cancelled")
        return {
            "robots": len(self.robots),
            "procedures": len(self.procedures),
            "outcomes": len(self.outcomes),
            "maintenance": len(self.maintenance),
            "telemetry": ran * self.telemetry_per_procedure,
        }


def generate(
    *,
    seed: int = 42,
    robots: int = 50,
    facilities: int = 10,
    procedure_count: int = 5000,
    telemetry_per_procedure: int = 20,
    end: datetime = DEFAULT_END,
    days: int = DEFAULT_DAYS,
) -> Dataset:
    """Generate a whole fleet deterministically from `seed` and the sizes."""
    master = rng_for(seed)
    # One independent stream per entity, so changing one size leaves the others' draws alone.
    seeds = {name: master.getrandbits(64) for name in ORDER}
    fleet_ = fleet(
        rng_for(seeds["robots"]), robots=robots, facilities=facilities, end=end, days=days
    )
    procs = procedures(
        rng_for(seeds["procedures"]), fleet_, count=procedure_count, end=end, days=days
    )
    visits = maintenance(rng_for(seeds["maintenance"]), fleet_, end=end)
    latest: dict[str, str] = {}
    for v in visits:
        if v["maintenance_date"] <= end.date().isoformat():
            latest[v["robot_id"]] = max(latest.get(v["robot_id"], ""), v["maintenance_date"])
    for robot in fleet_:
        robot["last_maintenance_date"] = latest.get(robot["robot_id"])
    return Dataset(
        robots=fleet_,
        procedures=procs,
        outcomes=outcomes(rng_for(seeds["outcomes"]), procs),
        maintenance=visits,
        telemetry_per_procedure=telemetry_per_procedure,
        end=end,
        telemetry_seed=seeds["telemetry"],
    )


# --- Sending ----------------------------------------------------------------------------------


class SeedError(Exception):
    """Sending failed; the message says why and is safe to show."""


@dataclass
class Sent:
    """What the service acknowledged for one entity."""

    records: int = 0
    written: int = 0
    duplicates: int = 0
    batches: int = 0


@dataclass
class Sender:
    """POST batches to an ingestion service, retrying what is safe to retry."""

    url: str
    api_key: str | None = None
    batch_size: int = MAX_BATCH
    concurrency: int = 1
    attempts: int = 6
    timeout: float = 60.0
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
        self.url = base_url(self.url)

    def __enter__(self) -> Sender:
        headers = {"User-Agent": f"medrobotics-seed/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=self.timeout,
            transport=self.transport,
            limits=httpx.Limits(max_connections=max(2, self.concurrency)),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def send(
        self,
        dataset: Dataset,
        *,
        progress: Callable[[str, int], None] | None = None,
    ) -> dict[str, Sent]:
        """Send every entity of `dataset` in dependency order; return what was acknowledged."""
        return {
            entity: self.send_entity(entity, dataset.records(entity), progress=progress)
            for entity in ORDER
        }

    def send_entity(
        self,
        entity: str,
        records: Iterable[Record],
        *,
        progress: Callable[[str, int], None] | None = None,
    ) -> Sent:
        """Send one entity's records in batches; all of them are committed before returning."""
        sent = Sent()

        def account(size: int, answer: dict[str, Any]) -> None:
            sent.records += size
            sent.batches += 1
            sent.written += int(answer.get("written") or 0)
            sent.duplicates += int(answer.get("duplicates") or 0)
            if progress is not None:
                progress(entity, size)

        batches = _chunks(records, self.batch_size)
        if self.concurrency <= 1:
            for batch in batches:
                account(len(batch), self.post(entity, batch))
            return sent
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="seed")
        pending: dict[Future[dict[str, Any]], int] = {}
        try:
            for batch in batches:
                # Bounded in flight: telemetry is generated lazily and must stay that way.
                while len(pending) >= 2 * self.concurrency:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        account(pending.pop(fut), fut.result())
                pending[pool.submit(self.post, entity, batch)] = len(batch)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    account(pending.pop(fut), fut.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return sent

    def post(self, entity: str, records: Sequence[Record]) -> dict[str, Any]:
        """POST one gzip-compressed batch; retry 429, 502-504 and connection errors."""
        assert self._client is not None, "use the Sender as a context manager"
        body = gzip.compress(orjson.dumps({"type": entity, "records": records}), compresslevel=5)
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        target = f"{self.url}/ingest/batch"
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            try:
                response = self._client.post(target, content=body, headers=headers)
            except httpx.TransportError as exc:
                # Batches are idempotent (upserts; re-sent samples are skipped): safe to retry.
                if last:
                    raise SeedError(f"cannot reach {target}: {exc or type(exc).__name__}") from None
                self.sleep(_backoff(attempt))
                continue
            if response.is_success:
                answer: dict[str, Any] = response.json()
                return answer
            if response.status_code in (429, 502, 503, 504) and not last:
                self.sleep(_retry_after(response) or _backoff(attempt))
                continue
            raise SeedError(_failure(entity, target, response))
        raise SeedError(f"{target}: gave up after {self.attempts} attempts")  # pragma: no cover


def base_url(url: str) -> str:
    """Return the service root for `url`, accepting a pasted `/ingest` or `/ingest/batch` too."""
    url = url.strip().rstrip("/")
    for suffix in ("/ingest/batch", "/ingest"):
        url = url.removesuffix(suffix)
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _backoff(attempt: int) -> float:
    return float(min(30.0, 0.5 * 2 ** (attempt - 1)))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return _clamp(seconds, 0.0, 60.0)


def _failure(entity: str, target: str, response: httpx.Response) -> str:
    status = response.status_code
    message = response.reason_phrase or "error"
    details: list[dict[str, Any]] = []
    try:
        error = response.json().get("error") or {}
        message = error.get("message") or message
        details = error.get("details") or []
    except (ValueError, AttributeError):
        text = response.text.strip()
        if text:
            message = text[:300]
    lines = [f"{entity} batch refused by {target}: HTTP {status}: {message}"]
    for d in details[:5]:
        where = f"record {d['index']}: " if d.get("index") is not None else ""
        lines.append(f"  {where}{d.get('field')}: {d.get('message')}")
    if status in (401, 403):
        lines.append("  check --api-key (or MEDROBOTICS_API_KEY)")
    return "\n".join(lines)
