// trainer_state.json.
#include "trainers/checkpointing/trainer_state.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace cellfm::trainers {

using nlohmann::json;

std::string trainer_state_json(const TrainerState& s) {
  json history = json::array();
  for (const data::DpSegment& segment : s.sampler.dp_history) {
    history.push_back({{"start_cells", segment.start_cells}, {"dp_size", segment.dp_size}});
  }
  const json out = {{"step", s.step},
                    {"epoch", s.epoch},
                    {"sampler",
                     {{"epoch", s.sampler.epoch},
                      {"cells_consumed", s.sampler.cells_consumed},
                      {"dp_history", history}}},
                    {"train_cells", s.train_cells},
                    {"cells_seen", s.cells_seen},
                    {"evaluated", s.evaluated},
                    {"eval_loss_start", s.eval_loss_start},
                    {"eval_loss_last", s.eval_loss_last},
                    {"skipped_steps", s.skipped_steps},
                    {"skipped_cells", s.skipped_cells},
                    {"consecutive_skips", s.consecutive_skips},
                    {"rollbacks", s.rollbacks},
                    {"lr_scale", s.lr_scale},
                    {"training_seconds", s.training_seconds},
                    {"family", s.family},
                    {"labels", s.labels},
                    {"reason", s.reason}};
  return out.dump(1) + "\n";
}

TrainerState parse_trainer_state(const std::string& text, const std::string& source) {
  TrainerState s;
  // Integers must be JSON integers of the field's range: nlohmann's get<> would convert a float
  // (or a negative number for an unsigned field) with undefined behaviour or wrapped around.
  const auto integer = [&source](const json& object, const char* key) -> std::int64_t {
    const json& value = object.at(key);
    if (!value.is_number_integer() ||
        (value.is_number_unsigned() &&
         value.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))) {
      throw core::InputError(source + " is not a valid trainer state: '" + key + "' is " +
                             value.dump() + ", not a 64-bit integer");
    }
    return value.get<std::int64_t>();
  };
  try {
    const json in = json::parse(text);
    s.step = integer(in, "step");
    s.epoch = integer(in, "epoch");
    const json& sampler = in.at("sampler");
    const std::int64_t sampler_epoch = integer(sampler, "epoch");
    if (sampler_epoch < 0) {
      throw core::InputError(source + " is not a valid trainer state: the sampler's epoch is " +
                             std::to_string(sampler_epoch));
    }
    s.sampler.epoch = static_cast<std::uint64_t>(sampler_epoch);
    s.sampler.cells_consumed = integer(sampler, "cells_consumed");
    for (const json& segment : sampler.at("dp_history")) {
      s.sampler.dp_history.push_back(
          {integer(segment, "start_cells"), integer(segment, "dp_size")});
    }
    s.train_cells = integer(in, "train_cells");
    s.cells_seen = integer(in, "cells_seen");
    s.evaluated = in.at("evaluated").get<bool>();
    s.eval_loss_start = in.at("eval_loss_start").get<double>();
    s.eval_loss_last = in.at("eval_loss_last").get<double>();
    s.skipped_steps = integer(in, "skipped_steps");
    // Checkpoints written before the count was kept have none: no cell was counted then.
    s.skipped_cells = in.contains("skipped_cells") ? integer(in, "skipped_cells") : 0;
    s.consecutive_skips = integer(in, "consecutive_skips");
    s.rollbacks = integer(in, "rollbacks");
    s.lr_scale = in.at("lr_scale").get<double>();
    s.training_seconds = in.at("training_seconds").get<double>();
    s.family = in.at("family").get<std::string>();
    s.labels = in.at("labels").get<std::vector<std::string>>();
    s.reason = in.at("reason").get<std::string>();
  } catch (const json::exception& e) {
    throw core::InputError(source + " is not a valid trainer state: " + e.what());
  }
  return s;
}

}  // namespace cellfm::trainers
