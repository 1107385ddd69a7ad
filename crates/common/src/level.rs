//! Classification levels after GB/T 43697-2024《数据安全技术 数据分类分级规则》.

/// A dataset's classification level, from least to most strict.
///
/// The derived `Ord` follows strictness, so the level of a query over several datasets is the
/// `max` of theirs (就高从严).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// 一般数据1级: a leak does no harm.
    L1,
    /// 一般数据2级: a leak does general harm.
    L2,
    /// 一般数据3级: a leak does serious harm.
    L3,
    /// 一般数据4级: a leak does particularly serious harm; PIPL sensitive personal information.
    L4,
    /// 重要数据.
    Important,
    /// 核心数据: never leaves its department.
    Core,
}

impl Level {
    /// Every level, least strict first.
    pub const ALL: [Level; 6] = [Level::L1, Level::L2, Level::L3, Level::L4, Level::Important, Level::Core];

    /// The stored code: `L1` … `L4`, `IMPORTANT`, `CORE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::L1 => "L1",
            Level::L2 => "L2",
            Level::L3 => "L3",
            Level::L4 => "L4",
            Level::Important => "IMPORTANT",
            Level::Core => "CORE",
        }
    }

    /// The level's name in the standard, for display.
    pub fn label_zh(self) -> &'static str {
        match self {
            Level::L1 => "一般数据1级",
            Level::L2 => "一般数据2级",
            Level::L3 => "一般数据3级",
            Level::L4 => "一般数据4级",
            Level::Important => "重要数据",
            Level::Core => "核心数据",
        }
    }

    /// Whether a dataset at this level may be about no person at all (declare no privacy unit).
    /// Only L1 and L2 may: anything stricter is presumed to be about people.
    pub fn allows_no_privacy_unit(self) -> bool {
        matches!(self, Level::L1 | Level::L2)
    }

    /// The most epsilon one analyst may spend on one dataset at this level within the budget
    /// window (design §2); `None` where the level sets no cap (L1, L2) or nothing is released
    /// (core data).
    pub fn epsilon_cap(self) -> Option<f64> {
        match self {
            Level::L3 => Some(10.0),
            Level::L4 => Some(3.0),
            Level::Important => Some(1.0),
            Level::L1 | Level::L2 | Level::Core => None,
        }
    }

    /// The default `k`: the fewest distinct privacy units a released group or equivalence class
    /// must hold (design §2). `None` for core data, which is never released.
    pub fn min_group_size(self) -> Option<u64> {
        match self {
            Level::L1 => Some(0),
            Level::L2 => Some(5),
            Level::L3 => Some(10),
            Level::L4 => Some(20),
            Level::Important => Some(50),
            Level::Core => None,
        }
    }
}

code_enum!(Level, UnknownLevel, "level");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_by_strictness_and_round_trip() {
        assert!(Level::L1 < Level::L4 && Level::L4 < Level::Important && Level::Important < Level::Core);
        for l in Level::ALL {
            assert_eq!(l.as_str().parse::<Level>(), Ok(l));
        }
        assert!("l1".parse::<Level>().is_err());
        assert!("公开".parse::<Level>().is_err(), "display aliases are not stored codes");
    }
}
