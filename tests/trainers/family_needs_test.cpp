// check_family_needs: what a family declares it needs against the spec (the batch shape, labels,
// group column, coordinates), refused by key, and the shapes a family that reads cells accepts.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "trainers/family/family_builder.h"

namespace cellfm::trainers {
namespace {

core::ExperimentOptions options_with(const std::string& batch_shape,
                                     const std::string& group_column) {
  core::ExperimentOptions options;
  options.model.family = "f";
  options.data.batch_shape = batch_shape;
  options.data.group_column = group_column;
  return options;
}

std::string refusal(const FamilyNeeds& needs, const core::ExperimentOptions& options,
                    bool training) {
  try {
    check_family_needs(needs, options, "x.yaml", training);
  } catch (const core::UsageError& e) {
    return e.what();
  }
  return "";
}

TEST(FamilyNeeds, AFamilyThatReadsCellsTrainsOnCellsAndOnGroups) {
  const FamilyNeeds cells;  // batch_shape cells
  EXPECT_EQ(refusal(cells, options_with("cells", ""), true), "");
  EXPECT_EQ(refusal(cells, options_with("groups", "sample_id"), true), "");
  EXPECT_EQ(refusal(cells, options_with("groups", "sample_id"), false), "");
}

TEST(FamilyNeeds, AFamilyThatNeedsGroupsRefusesCellsAndAMissingGroupColumn) {
  FamilyNeeds groups;
  groups.batch_shape = data::BatchShape::groups;
  EXPECT_EQ(refusal(groups, options_with("groups", "sample_id"), true), "");
  const std::string cells = refusal(groups, options_with("cells", "sample_id"), true);
  EXPECT_NE(cells.find("x.yaml"), std::string::npos) << cells;
  EXPECT_NE(cells.find("data.batch_shape groups, not cells"), std::string::npos) << cells;
  const std::string column = refusal(groups, options_with("groups", ""), true);
  EXPECT_NE(column.find("data.group_column"), std::string::npos) << column;
  // Inference (embed) reads its input however the family needs; the group column still matters.
  EXPECT_EQ(refusal(groups, options_with("cells", "sample_id"), false), "");
}

TEST(FamilyNeeds, LabelsAreNeededForTrainingOnlyAndCoordinatesAlways) {
  FamilyNeeds labels;
  labels.labels = true;
  const std::string missing = refusal(labels, options_with("cells", ""), true);
  EXPECT_NE(missing.find("data.label_column"), std::string::npos) << missing;
  EXPECT_EQ(refusal(labels, options_with("cells", ""), false), "");
  core::ExperimentOptions labelled = options_with("cells", "");
  labelled.data.label_column = "cell_type";
  EXPECT_EQ(refusal(labels, labelled, true), "");

  FamilyNeeds coordinates;
  coordinates.coordinates = true;
  const std::string none = refusal(coordinates, options_with("cells", ""), false);
  EXPECT_NE(none.find("data.spatial_obsm"), std::string::npos) << none;
  core::ExperimentOptions spatial = options_with("cells", "");
  spatial.data.spatial_obsm = "spatial";
  EXPECT_EQ(refusal(coordinates, spatial, true), "");
}

}  // namespace
}  // namespace cellfm::trainers
