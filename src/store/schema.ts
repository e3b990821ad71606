// Table shapes as the database holds them. JSON-valued columns are text here; repositories
// parse them, so no caller depends on a dialect's JSON support.
import type { Generated, Insertable, Selectable, Updateable } from 'kysely';

export interface FilesTable {
  seq: Generated<number>;
  id: string;
  organization_id: string;
  filename: string;
  purpose: string;
  bytes: number;
  created_at: number;
  expires_at: number | null;
  status: string;
  status_details: string | null;
}

export interface UploadsTable {
  seq: Generated<number>;
  id: string;
  organization_id: string;
  filename: string;
  purpose: string;
  bytes: number;
  mime_type: string;
  status: string;
  created_at: number;
  expires_at: number;
  file_id: string | null;
  /** `expires_after.seconds` from create: the file made on complete expires that long after its created_at. */
  file_expires_after: number | null;
}

export interface UploadPartsTable {
  seq: Generated<number>;
  id: string;
  upload_id: string;
  bytes: number;
  created_at: number;
}

export interface JobsTable {
  seq: Generated<number>;
  id: string;
  organization_id: string;
  model: string;
  training_file: string;
  validation_file: string | null;
  status: string;
  /** JSON: FineTuneMethod, hyperparameters resolved once the dataset is known. */
  method: string;
  suffix: string | null;
  seed: number;
  /** JSON or null. Also mirrored row by row in job_metadata for filtering. */
  metadata: string | null;
  /** JSON or null. */
  integrations: string | null;
  /** JSON {code, message, param} or null. */
  error: string | null;
  fine_tuned_model: string | null;
  finished_at: number | null;
  trained_tokens: number | null;
  estimated_finish: number | null;
  /** JSON string[]. */
  result_files: string;
  created_at: number;
  /** JSON facts learnt while validating files (example counts…), or null. */
  dataset: string | null;
  /** Queue: the worker holding the job and until when (ms since epoch). */
  worker_id: string | null;
  lease_expires_at_ms: number | null;
  /** Queue: how many times a worker has claimed the job. */
  attempts: number;
  /** Blob key (prefix) of the engine-written resume point to continue from after a pause or a lost worker, on any host. */
  resume_point: string | null;
  /** Bumped by every update of the row (JobsRepository): readers may keep what they built from a version. */
  version: Generated<number>;
  /** Queue: memory a worker needs to hold the job (the engine's estimate, else the model's size); null: unknown. */
  memory_required_bytes: number | null;
}

/** A worker process: what it can hold, and when it last said it is alive (ms since epoch). */
export interface WorkersTable {
  id: string;
  host: string;
  /** Most memory a job may use on this worker. */
  memory_bytes: number;
  cores: number;
  started_at_ms: number;
  heartbeat_at_ms: number;
}

export interface JobMetadataTable {
  job_id: string;
  key: string;
  value: string;
}

export interface EventsTable {
  seq: Generated<number>;
  id: string;
  job_id: string;
  created_at: number;
  level: string;
  type: string;
  message: string;
  /** JSON object or null. */
  data: string | null;
}

export interface CheckpointsTable {
  seq: Generated<number>;
  id: string;
  job_id: string;
  organization_id: string;
  created_at: number;
  fine_tuned_model_checkpoint: string;
  step_number: number;
  /** JSON metrics object. */
  metrics: string;
  /** Blob key (prefix) of the checkpoint's weights (jobs/<id>/checkpoints/step-N), or null. */
  dir: string | null;
}

export interface PermissionsTable {
  seq: Generated<number>;
  id: string;
  checkpoint: string;
  project_id: string;
  created_at: number;
}

export interface ModelsTable {
  seq: Generated<number>;
  /** The fine-tuned model name (ft:…). */
  id: string;
  organization_id: string;
  created_at: number;
  job_id: string;
  base_model: string;
  /** Blob key (prefix) of its weights: its job's final checkpoint's, or null. */
  dir: string | null;
}

export interface Database {
  files: FilesTable;
  uploads: UploadsTable;
  upload_parts: UploadPartsTable;
  jobs: JobsTable;
  job_metadata: JobMetadataTable;
  events: EventsTable;
  checkpoints: CheckpointsTable;
  permissions: PermissionsTable;
  models: ModelsTable;
  workers: WorkersTable;
}

export type FileRow = Selectable<FilesTable>;
export type NewFileRow = Insertable<FilesTable>;
export type UploadRow = Selectable<UploadsTable>;
export type UploadPartRow = Selectable<UploadPartsTable>;
export type JobRow = Selectable<JobsTable>;
export type NewJobRow = Insertable<JobsTable>;
export type JobUpdate = Updateable<JobsTable>;
export type EventRow = Selectable<EventsTable>;
export type CheckpointRow = Selectable<CheckpointsTable>;
export type PermissionRow = Selectable<PermissionsTable>;
export type ModelRow = Selectable<ModelsTable>;
export type WorkerRow = Selectable<WorkersTable>;
