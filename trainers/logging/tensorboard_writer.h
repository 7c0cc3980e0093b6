// TensorBoard scalar event files written directly (no protobuf library): the run's loss curves as
// `tensorboard --logdir RUN/tensorboard` shows them.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace cellfm::trainers {

/// Writes one TensorBoard event file in `directory`.
///
/// File format (TFRecord framing, as TensorFlow's EventsWriter writes it): a sequence of records,
/// each
///   uint64 length (little-endian) | uint32 masked CRC-32C of those 8 bytes (little-endian) |
///   `length` bytes of payload     | uint32 masked CRC-32C of the payload (little-endian),
/// with masked_crc32c from core/crc32c.h. Each payload is a serialised tensorflow.Event message:
///   1: wall_time (double, seconds since the Unix epoch), 2: step (int64 varint),
///   3: file_version (string, first record only: "brain.Event:2"),
///   5: summary = Summary { repeated Value value = 1 { string tag = 1; float simple_value = 2 } }.
/// TensorBoard (`tensorboard --logdir RUN/tensorboard`) reads every file whose name contains
/// "tfevents" in that directory and shows one curve per tag.
///
/// Durability: the file is opened append-only and flushed (fflush) after every add_scalars call,
/// so a job killed at any moment leaves whole records, except possibly a partial last one, which
/// TensorBoard ignores.
///
/// Not thread-safe: one thread (rank 0's training loop) owns a writer.
class TensorBoardWriter {
 public:
  /// Creates `directory` (and its parents) if missing and opens a new file
  /// `events.out.tfevents.<unix seconds, 10 digits>.<hostname>.<pid>.cellfm` in it, then writes
  /// the first Event {wall_time: now, file_version: "brain.Event:2"}. Throws core::InputError
  /// naming the path and the system's reason when the directory or file cannot be created, and
  /// core::SystemError when the first record cannot be written.
  explicit TensorBoardWriter(const std::string& directory);
  /// Flushes and closes the file; never throws.
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  /// Appends one Event {wall_time: `wall_time_seconds` (seconds since the Unix epoch), step:
  /// `step`, summary: one Value per entry of `scalars`, in order} and flushes. Values are stored
  /// as float32 (TensorBoard's simple_value); NaN and infinities are written as they are. Tags
  /// are written as given (UTF-8; "/" groups curves in TensorBoard). Throws core::SystemError
  /// naming the file when the write or flush fails (disk full).
  void add_scalars(std::int64_t step, const std::vector<std::pair<std::string, double>>& scalars,
                   double wall_time_seconds);

  /// Flushes buffered records to the operating system. Throws core::SystemError on failure.
  void flush();

  /// The event file's full path.
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& payload);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace cellfm::trainers
