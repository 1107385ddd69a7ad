//! The metadata draft's detector measured on a held-back sample: two registers written for this
//! test (one with Chinese column names, one with English ones), in forms and names the detector
//! was not written against, each column with the tag a steward would declare. Precision and
//! recall per tag are printed and the identifiers' are held to a floor; the README reports
//! them.

#![allow(clippy::unwrap_used)] // tests: a failed fixture should fail loudly

use std::collections::BTreeMap;

use veil_common::Tag;

/// A valid 身份证号: region, birth date, sequence, and its ISO 7064 MOD 11-2 check character.
fn id_number(i: usize) -> String {
    let body = format!("3301{:02}{}{:02}{:02}{:03}", 2 + i % 7, 1940 + i % 50, 1 + i % 12, 1 + i % 28, i % 1000);
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body.chars().zip(WEIGHTS).map(|(c, w)| c.to_digit(10).unwrap() * w).sum();
    let check = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'][(sum % 11) as usize];
    format!("{body}{check}")
}

/// A card number with a valid Luhn digit.
fn card(i: usize) -> String {
    let body = format!("622848{:012}", i * 7919 + 13);
    let sum: u32 = body
        .chars()
        .rev()
        .enumerate()
        .map(|(n, c)| {
            let d = c.to_digit(10).unwrap();
            if n % 2 == 0 {
                let d = d * 2;
                if d > 9 { d - 9 } else { d }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// One register: its columns with the tag a steward would declare, and a value per row.
type Register = Vec<(&'static str, Tag, Box<dyn Fn(usize) -> String>)>;

fn social_assistance() -> Register {
    let surnames = ["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "周", "吴"];
    let given = ["建国", "秀英", "伟", "芳", "志强", "丽", "国平", "桂兰"];
    let streets = ["文晖街道", "湖滨街道", "北山街道", "西溪街道"];
    vec![
        ("证件号码", Tag::Identifier, Box::new(id_number)),
        ("申请人", Tag::Identifier, Box::new(move |i| format!("{}{}", surnames[i % 10], given[i % 8]))),
        ("联系方式", Tag::Identifier, Box::new(|i| format!("13{}{:08}", 5 + i % 4, i * 37 % 100_000_000))),
        (
            "现住址",
            Tag::Identifier,
            Box::new(move |i| format!("浙江省杭州市{}{}号{}室", streets[i % 4], 1 + i % 90, 101 + i % 6)),
        ),
        ("收款账号", Tag::Identifier, Box::new(card)),
        ("性别", Tag::QuasiIdentifier, Box::new(|i| ["男", "女"][i % 2].to_owned())),
        ("出生年月", Tag::QuasiIdentifier, Box::new(|i| format!("{}-{:02}-01", 1940 + i % 50, 1 + i % 12))),
        ("所在街道", Tag::QuasiIdentifier, Box::new(move |i| streets[i % 4].to_owned())),
        ("家庭人口", Tag::QuasiIdentifier, Box::new(|i| (1 + i % 6).to_string())),
        ("救助类别", Tag::Sensitive, Box::new(|i| ["低保", "特困", "低边", "临时救助"][i % 4].to_owned())),
        ("月救助金", Tag::Sensitive, Box::new(|i| format!("{}.5", 300 + i % 40 * 25))),
        ("主要疾病", Tag::Sensitive, Box::new(|i| ["I10", "E11.9", "J44.1", "C34.9", "F20.0"][i % 5].to_owned())),
        ("受理日期", Tag::Attribute, Box::new(|i| format!("2024-{:02}-{:02}", 1 + i % 12, 1 + i % 28))),
        ("办理状态", Tag::Attribute, Box::new(|i| ["已办结", "审核中"][i % 2].to_owned())),
    ]
}

fn benefits_en() -> Register {
    vec![
        ("citizen_no", Tag::Identifier, Box::new(|i| id_number(i + 3))),
        (
            "applicant_name",
            Tag::Identifier,
            Box::new(|i| format!("{}{}", ["孙", "马", "朱"][i % 3], ["敏", "军", "玉兰"][i % 3])),
        ),
        ("tel", Tag::Identifier, Box::new(|i| format!("0571-8{:07}", i * 31 % 10_000_000))),
        ("email_address", Tag::Identifier, Box::new(|i| format!("user{i}@example.cn"))),
        ("gender", Tag::QuasiIdentifier, Box::new(|i| ["M", "F"][i % 2].to_owned())),
        ("birth_year", Tag::QuasiIdentifier, Box::new(|i| (1940 + i % 50).to_string())),
        ("county", Tag::QuasiIdentifier, Box::new(|i| ["西湖区", "上城区", "拱墅区"][i % 3].to_owned())),
        ("income", Tag::Sensitive, Box::new(|i| (1000 + i % 97 * 113).to_string())),
        ("disability_grade", Tag::Sensitive, Box::new(|i| ["一级", "二级", "三级", "四级"][i % 4].to_owned())),
        ("case_opened", Tag::Attribute, Box::new(|i| format!("2023-{:02}-15", 1 + i % 12))),
        ("channel", Tag::Attribute, Box::new(|i| ["窗口", "网上", "电话"][i % 3].to_owned())),
    ]
}

/// Each column's declared tag and the draft's, over every register.
fn drafted() -> Vec<(String, Tag, Tag)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for (n, register) in [social_assistance(), benefits_en()].into_iter().enumerate() {
        let mut csv = register.iter().map(|(name, _, _)| *name).collect::<Vec<_>>().join(",");
        csv.push('\n');
        for i in 0..400 {
            csv.push_str(&register.iter().map(|(_, _, value)| value(i)).collect::<Vec<_>>().join(","));
            csv.push('\n');
        }
        let path = dir.path().join(format!("register{n}.csv"));
        std::fs::write(&path, csv).unwrap();
        let draft = veil_catalog::draft::draft(&path).unwrap();
        for (name, declared, _) in &register {
            let column = draft.columns.iter().find(|c| c.name == *name).unwrap();
            out.push(((*name).to_owned(), *declared, column.tag));
        }
    }
    out
}

#[test]
fn the_detector_on_a_held_back_sample() {
    let drafted = drafted();
    let mut report = BTreeMap::new();
    for tag in [Tag::Identifier, Tag::QuasiIdentifier, Tag::Sensitive, Tag::Attribute] {
        let suggested = drafted.iter().filter(|(_, _, s)| *s == tag).count();
        let declared = drafted.iter().filter(|(_, d, _)| *d == tag).count();
        let both = drafted.iter().filter(|(_, d, s)| *d == tag && *s == tag).count();
        report.insert(tag.to_string(), (both, suggested, declared));
    }
    let agree = drafted.iter().filter(|(_, d, s)| d == s).count();
    eprintln!("held-back sample: {agree} of {} tags as declared", drafted.len());
    for (tag, (both, suggested, declared)) in &report {
        eprintln!("  {tag}: precision {both}/{suggested}, recall {both}/{declared}");
    }
    let missed: Vec<&String> =
        drafted.iter().filter(|(_, d, s)| *d == Tag::Identifier && *s != Tag::Identifier).map(|(n, _, _)| n).collect();
    eprintln!("  identifiers missed: {missed:?}");
    let mistaken: Vec<(&String, &Tag)> = drafted.iter().filter(|(_, d, s)| d != s).map(|(n, _, s)| (n, s)).collect();
    eprintln!("  differing: {mistaken:?}");
    // An identifier left untagged as one is what a steward must not miss.
    let (both, _, declared) = report["identifier"];
    assert!(both * 10 >= declared * 8, "{both} of {declared} identifiers found: missed {missed:?}");
}
