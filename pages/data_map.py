"""Data map: why the model fails, and whether it is the model or the data. A map of every image in
the model's feature space (select a region to see its studies), cleanlab's label-issue queue and the
near-duplicate / leakage audit. Everything is read from core.embeddings' cache."""

from __future__ import annotations

import streamlit as st

from dashboard import accuracy, data_map, state

MAP_KEY = "data_map_scatter"

model = state.checked_model_name()
st.title("Data map")
try:
    table = data_map.map_table(model)
except data_map.CacheMissing as exc:
    st.info(str(exc))
    st.stop()
audit = data_map.read_audit(model) or {}
meta = audit.get("embeddings", {})
st.caption(
    "Every image of MURA train/ and valid/ (humerus, forearm) and FracAtlas, placed by the model's "
    "penultimate features. **train/ is shown out of fold**: each image as embedded by the one ensemble "
    "member that never trained on it (members aligned on held-out images); valid/ and FracAtlas by member 0. "
    "Close points are cases the model thinks look alike."
)

map_tab, issues_tab, duplicates_tab = st.tabs(["Map", "Label issues", "Duplicates and leakage"])

with map_tab:
    controls = st.columns([2, 2, 3])
    colour = controls[0].selectbox("Colour by", list(data_map.COLOUR_OPTIONS), key="data_map_colour")
    projection = controls[1].radio(
        "Projection",
        ["umap", "pca"],
        horizontal=True,
        key="data_map_projection",
        format_func={"umap": "UMAP", "pca": "PCA"}.get,
        help="UMAP keeps neighbourhoods (seeded); PCA keeps global directions.",
    )
    datasets = controls[2].multiselect(
        "Datasets",
        list(data_map.DATASET_LABELS),
        default=list(data_map.DATASET_LABELS),
        format_func=data_map.DATASET_LABELS.get,
        key="data_map_datasets",
    )
    event = st.plotly_chart(
        data_map.map_figure(model, data_map.COLOUR_OPTIONS[colour], projection),
        key=MAP_KEY,
        on_select="rerun",
        selection_mode=("box", "lasso", "points"),
        config={"displayModeBar": True, "displaylogo": False},
    )
    st.caption(
        "Draw a box or a lasso (toolbar), or click a point, to list its studies below; double-click clears. "
        "Hover names the study; its pictures are drawn below from your own data folders."
    )
    _atlas_root, atlas_problem = accuracy.folder_input("data_map_fracatlas_root")
    if atlas_problem:
        st.error(atlas_problem)
    picked = table.iloc[data_map.selected_rows(event, len(table))]
    picked = picked[picked["dataset"].isin(datasets)]
    if picked.empty:
        st.info("Nothing selected yet: select a region of the map.")
    else:
        selected = data_map.study_summary(picked)
        st.subheader(f"{len(selected)} {'study' if len(selected) == 1 else 'studies'} selected ({len(picked)} images)")
        counts = selected["error"].value_counts()
        st.caption(data_map.error_counts(selected["error"]) + " — most confidently wrong first.")
        data_map.table_with_download(
            selected.assign(dataset=selected["dataset"].map(data_map.DATASET_LABELS)),
            selected,
            keys=("data_map_selected", "data_map_export"),
            label="Download the selection (CSV)",
            file_name=f"{model}_map_selection.csv",
            columns={"study": "Study", "study_probability": "Probability (of Output)", "threshold": "Threshold"},
        )
        cams = st.toggle(
            f"Show the top {min(len(selected), data_map.MAX_GALLERY)} with their CAMs",
            key="data_map_cams",
            help="Runs the model on these views; a second or so each.",
        )
        data_map.show_studies(selected, key="data_map", cams=cams)

with issues_tab:
    issues = data_map.read_label_issues(model)
    if issues is None:
        st.info(data_map.missing_cache_message(model))
    else:
        st.caption(
            "cleanlab (confident learning) on the model's out-of-sample study probabilities: out of fold on "
            "train/, the untouched valid/. Lowest label quality first: studies whose label the model, which "
            "never saw them, most confidently contradicts. A queue for review, not a verdict."
        )
        scored = audit.get("studies_scored", {})
        flagged = audit.get("label_issues", {})
        columns = st.columns(len(scored) or 1)
        for column, (dataset, count) in zip(columns, scored.items(), strict=False):
            column.metric(
                f"Flagged in {data_map.DATASET_LABELS.get(dataset, dataset)}", f"{flagged.get(dataset, 0)} of {count}"
            )
        choice = st.radio(
            "Show", ["flagged by cleanlab", "all, by label quality"], horizontal=True, key="issues_filter"
        )
        queue = issues[issues["label_issue"]] if choice == "flagged by cleanlab" else issues
        queue = queue.assign(
            dataset=queue["dataset"].map(data_map.DATASET_LABELS),
            label_text=queue["label"].map({1: "abnormal", 0: "normal"}),
        )
        data_map.table_with_download(
            queue[["study_path", "dataset", "study_type", "label_text", "probability", "label_quality", "views"]],
            queue,
            keys=("issues_table", "issues_export"),
            label="Download the queue for review (CSV)",
            file_name=f"{model}_label_issues.csv",
            columns={"study_path": "Study", "probability": "P(abnormal)", "label_quality": "Label quality"},
        )
        shown = st.slider("Studies to show", 1, data_map.MAX_GALLERY, 3, key="issues_shown")
        cams = st.toggle("With CAMs", key="issues_cams", help="Runs the model on these views.")
        data_map.show_studies(
            queue.rename(columns={"study_path": "study", "probability": "study_probability"}).assign(
                dataset=queue["dataset"].map({v: k for k, v in data_map.DATASET_LABELS.items()})
            ),
            key="issues",
            cams=cams,
            limit=shown,
        )

with duplicates_tab:
    duplicates = data_map.read_duplicates(model)
    summary = audit.get("duplicates")
    if duplicates is None or summary is None:
        st.info(data_map.missing_cache_message(model))
    else:
        scopes = summary.get("groups_by_scope", {})
        cells = st.columns(4)
        cells[0].metric("Near-duplicate groups", summary["groups"], help=f"{summary['images_in_groups']} images")
        cells[1].metric(
            "train-valid leaks",
            scopes.get("train-valid leak", 0),
            help="Groups with images in both MURA train/ and valid/.",
        )
        cells[2].metric("Patients in train and valid", summary["train_valid_shared_patients"])
        known = summary.get("fracatlas_known", {})
        cells[3].metric(
            "FracAtlas copy groups recovered",
            f"{known.get('recovered', 0)} of {known.get('groups', 0)}",
            help="FracAtlas's own copy groups (core.data.fracatlas.duplicate_groups) found by these checks.",
        )
        st.caption(
            f"Pairs within {summary['thresholds']['phash_bits']} of 64 perceptual-hash bits, or with embedding "
            f"cosine ≥ {summary['thresholds']['cosine']}, joined into groups. By scope: "
            + (", ".join(f"{k} {v}" for k, v in scopes.items()) or "none")
            + f". MURA groups spanning patients: {summary['mura_groups_across_patients']}."
        )
        scope = st.selectbox("Scope", ["all", *scopes], key="duplicates_scope")
        rows = duplicates if scope == "all" else duplicates[duplicates["scope"] == scope]
        st.dataframe(
            rows.assign(dataset=rows["dataset"].map(data_map.DATASET_LABELS))[
                ["group", "scope", "dataset", "key", "study", "patient", "patients"]
            ],
            hide_index=True,
            width="stretch",
            key="duplicates_table",
            column_config={
                "key": st.column_config.TextColumn("Image", width="large"),
                "patients": "MURA patients in group",
            },
        )
        st.download_button(
            "Download the groups (CSV)",
            rows.to_csv(index=False).encode(),
            mime="text/csv",
            file_name=f"{model}_duplicates.csv",
            key="duplicates_export",
        )
        if not rows.empty:
            group = st.selectbox("Look at group", sorted(rows["group"].unique()), key="duplicates_group")
            data_map.show_group(data_map.group_members(model, rows[rows["group"] == group]))
