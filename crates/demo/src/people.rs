//! The person space shared by every department.

use rand::Rng;
use rand::seq::IndexedRandom;
use time::{Date, Month};

/// A Beijing district: its GB/T 2260 code, name and some of its streets (街道).
#[derive(Debug, Clone, Copy)]
pub struct District {
    /// Six-digit administrative division code, the first six digits of a resident's 身份证号.
    pub code: &'static str,
    /// 区 name.
    pub name: &'static str,
    /// 街道 names.
    pub streets: &'static [&'static str],
}

/// The districts people live in. The last, 门头沟区, is deliberately small so that its groups
/// fall under the k thresholds and show suppression.
pub const DISTRICTS: [District; 9] = [
    District { code: "110101", name: "东城区", streets: &["东华门街道", "景山街道", "和平里街道"] },
    District { code: "110102", name: "西城区", streets: &["什刹海街道", "金融街街道", "德胜街道"] },
    District {
        code: "110105", name: "朝阳区", streets: &["望京街道", "三里屯街道", "劲松街道", "双井街道"]
    },
    District { code: "110106", name: "丰台区", streets: &["右安门街道", "卢沟桥街道", "方庄街道"] },
    District { code: "110108", name: "海淀区", streets: &["中关村街道", "学院路街道", "万寿路街道"] },
    District { code: "110112", name: "通州区", streets: &["北苑街道", "新华街道", "中仓街道"] },
    District { code: "110114", name: "昌平区", streets: &["城北街道", "回龙观街道", "天通苑北街道"] },
    District { code: "110115", name: "大兴区", streets: &["兴丰街道", "清源街道", "林校路街道"] },
    District { code: "110109", name: "门头沟区", streets: &["大峪街道", "城子街道"] },
];

/// Relative population of each district (same order as [`DISTRICTS`]).
const DISTRICT_WEIGHTS: [u32; 9] = [8, 10, 22, 14, 18, 10, 10, 7, 1];

const SURNAMES: [&str; 24] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭", "何", "高", "林",
    "罗", "郑", "梁", "谢", "宋",
];
const GIVEN: [&str; 40] = [
    "伟", "芳", "娜", "秀", "英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
    "霞", "平", "刚", "桂", "兰", "华", "建", "国", "玉", "红", "文", "海", "燕", "志", "荣", "凤", "春", "德", "晨",
    "宇", "欣",
];

/// One resident.
#[derive(Debug, Clone)]
pub struct Person {
    /// 18-digit 公民身份号码 with a valid check digit.
    pub id_number: String,
    /// Chinese name.
    pub name: String,
    /// Mobile number.
    pub phone: String,
    /// `男` or `女`.
    pub gender: &'static str,
    /// Date of birth.
    pub birth_date: Date,
    /// Index into [`DISTRICTS`].
    pub district: usize,
    /// Street within the district.
    pub street: &'static str,
}

impl Person {
    /// Age in whole years on `on`.
    pub fn age_on(&self, on: Date) -> i32 {
        let mut age = on.year() - self.birth_date.year();
        if (on.month() as u8, on.day()) < (self.birth_date.month() as u8, self.birth_date.day()) {
            age -= 1;
        }
        age
    }

    /// The district's name.
    pub fn district_name(&self) -> &'static str {
        DISTRICTS[self.district].name
    }
}

/// The GB 11643-1999 check character of the first 17 digits of a 公民身份号码 (ISO 7064 MOD 11-2).
pub fn id_check_char(first17: &str) -> char {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    let sum: u32 = first17.chars().zip(WEIGHTS).map(|(c, w)| c.to_digit(10).unwrap_or(0) * w).sum();
    CHECK[(sum % 11) as usize]
}

/// The date the demo data is "as of".
pub fn reference_date() -> Date {
    Date::from_calendar_date(2026, Month::November, 1).unwrap_or(Date::MIN)
}

fn weighted_district(rng: &mut impl Rng) -> usize {
    let total: u32 = DISTRICT_WEIGHTS.iter().sum();
    let mut pick = rng.random_range(0..total);
    for (i, w) in DISTRICT_WEIGHTS.iter().enumerate() {
        if pick < *w {
            return i;
        }
        pick -= w;
    }
    0
}

/// Draws `n` distinct residents. About 40% are 60 or older, so the elderly registry is large.
pub fn generate_people(rng: &mut impl Rng, n: usize) -> Vec<Person> {
    let today = reference_date();
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut people = Vec::with_capacity(n);
    while people.len() < n {
        let district = weighted_district(rng);
        let age = if rng.random_bool(0.4) { rng.random_range(60..96) } else { rng.random_range(18..60) };
        let birth_date = today
            .replace_year(today.year() - age)
            .unwrap_or(today)
            .saturating_sub(time::Duration::days(rng.random_range(0..365)));
        let male = rng.random_bool(0.5);
        let seq: u32 = rng.random_range(0..500) * 2 + u32::from(male);
        let first17 = format!(
            "{}{:04}{:02}{:02}{:03}",
            DISTRICTS[district].code,
            birth_date.year(),
            birth_date.month() as u8,
            birth_date.day(),
            seq
        );
        let id_number = format!("{first17}{}", id_check_char(&first17));
        if !seen.insert(id_number.clone()) {
            continue;
        }
        let surname = SURNAMES.choose(rng).copied().unwrap_or("王");
        let mut name = surname.to_owned();
        for _ in 0..rng.random_range(1..=2) {
            name.push_str(GIVEN.choose(rng).copied().unwrap_or("明"));
        }
        let prefix = ["138", "139", "135", "186", "159", "177", "152", "188"].choose(rng).copied().unwrap_or("138");
        let phone = format!("{prefix}{:08}", rng.random_range(0..100_000_000u32));
        let street = DISTRICTS[district].streets.choose(rng).copied().unwrap_or("");
        people.push(Person {
            id_number,
            name,
            phone,
            gender: if male { "男" } else { "女" },
            birth_date,
            district,
            street,
        });
    }
    people
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn id_numbers_have_valid_check_digits() {
        // The worked example from GB 11643-1999.
        assert_eq!(id_check_char("11010519491231002"), 'X');
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for p in generate_people(&mut rng, 500) {
            assert_eq!(p.id_number.len(), 18);
            let (body, check) = p.id_number.split_at(17);
            assert_eq!(check.chars().next(), Some(id_check_char(body)));
            let male = body[16..17].parse::<u32>().map(|d| d % 2 == 1).unwrap_or(false);
            assert_eq!(male, p.gender == "男", "17th digit is odd for men");
        }
    }
}
