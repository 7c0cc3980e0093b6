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
  try {
    const json in = json::parse(text);
    s.step = in.at("step").get<std::int64_t>();
    s.epoch = in.at("epoch").get<std::int64_t>();
    const json& sampler = in.at("sampler");
    s.sampler.epoch = sampler.at("epoch").get<std::uint64_t>();
    s.sampler.cells_consumed = sampler.at("cells_consumed").get<std::int64_t>();
    for (const json& segment : sampler.at("dp_history")) {
      s.sampler.dp_history.push_back({segment.at("start_cells").get<std::int64_t>(),
                                      segment.at("dp_size").get<std::int64_t>()});
    }
    s.train_cells = in.at("train_cells").get<std::int64_t>();
    s.cells_seen = in.at("cells_seen").get<std::int64_t>();
    s.evaluated = in.at("evaluated").get<bool>();
    s.eval_loss_start = in.at("eval_loss_start").get<double>();
    s.eval_loss_last = in.at("eval_loss_last").get<double>();
    s.skipped_steps = in.at("skipped_steps").get<std::int64_t>();
    s.consecutive_skips = in.at("consecutive_skips").get<std::int64_t>();
    s.rollbacks = in.at("rollbacks").get<std::int64_t>();
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
